"""Processes of their own, forked from a server that has imported torch and Lightning already: for tests whose subject
is a process (killed, holding a lock, racing others) but not its start-up, each of which would otherwise spend 4 s of
CPU importing them again. One server per test process (multiprocessing's forkserver, started on first use); each
child gets the environment of the moment it is started, its own session, and is killed as a group on a timeout.
A test that holds what only a fresh interpreter shows (a library's warnings at import, start-up) starts one instead.
"""

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers import output_into, run_main_block

CONTEXT = multiprocessing.get_context("forkserver")
# Imported once by the server, before any child forks from it.
CONTEXT.set_forkserver_preload(["cats_model.train"])
CLI = ("python", "-m", "cats_model.train")


def start(target, *args) -> multiprocessing.Process:
    """`target(*args)` in a forked process of its own session, with this process's environment as it is now."""
    process = CONTEXT.Process(target=_in_session, args=(dict(os.environ), target, args), daemon=True)
    process.start()
    return process


def stop(process: multiprocessing.Process) -> None:
    """SIGKILL to the process's group (its own and whatever it started), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.join()


def run_cli(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m cats_model.train OVERRIDES` in a forked process: its exit status (minus the signal that killed
    it, as subprocess gives it) and its output, as its own process would give them."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder, "stdout"), Path(folder, "stderr")
        process = CONTEXT.Process(target=_in_session, args=(env, _cli, (overrides, out, err)), daemon=True)
        process.start()
        process.join(timeout)
        timed_out = process.is_alive()
        stop(process)
        assert not timed_out, f"{' '.join(CLI)} {' '.join(overrides)} ran past {timeout} s"
        return subprocess.CompletedProcess(
            [*CLI, *overrides], process.exitcode, out.read_text(), err.read_text()
        )


def _in_session(env: dict, target, args) -> None:
    os.setsid()
    os.environ.clear()
    os.environ.update(env)
    target(*args)


def _cli(overrides: tuple[str, ...], out: Path, err: Path) -> None:
    with open(out, "w") as stdout, open(err, "w") as stderr:
        output_into(stdout, stderr)  # the process's own, to its end
    sys.argv = ["cats_model/train.py", *overrides]
    run_main_block("cats_model.train")
