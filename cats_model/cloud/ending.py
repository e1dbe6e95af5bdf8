"""How a training process ended, in one line: the signal that ended it explained, and the line it wrote last."""

import signal
from pathlib import Path

# What a person can do about the signals that end a training process from outside.
SIGNALS = {
    signal.SIGKILL: "killed by the system (SIGKILL): out of memory?",
    signal.SIGTERM: "stopped from outside (SIGTERM)",
    signal.SIGINT: "interrupted (SIGINT)",
    signal.SIGSEGV: "crashed in native code (SIGSEGV)",
    signal.SIGBUS: "crashed in native code (SIGBUS): out of shared memory? (data.num_workers=0 needs none)",
}


def how_it_ended(returncode: int, error_line: str, log_file: Path) -> str:
    """`returncode` as Popen gives it (minus a signal's number when one ended the process); `error_line`: the
    line the process reported it ended with (its exception's, when one ended it; cats_model.errors.OUTCOME_ENV);
    `log_file`: its train.log, where a killed process wrote last."""
    if returncode >= 0:
        return f"exit code {returncode}; its last line: {error_line or '(none)'}"
    try:
        name = signal.Signals(-returncode)
    except ValueError:
        name = None
    what = SIGNALS.get(name, f"ended by signal {name.name if name else -returncode}")
    return f"{what}; its last line: {last_line(log_file) or error_line or '(none)'}"


def last_line(path: Path, tail_bytes: int = 65536) -> str:
    """The last record of a run's log, read from its end: the first line of a record that spans several (a
    table), which says what it is; the last non-empty line of a log in another format; '' when there is none."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, 2) - tail_bytes))
            lines = [line.strip() for line in file.read().decode("utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    records = [line for line in lines if line.startswith("[")]  # Hydra's format: [time][logger][level] - ...
    return (records or lines or [""])[-1]
