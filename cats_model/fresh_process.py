"""`function(*args)` in a new Python process, as a container starts fresh: no state, threads or CUDA context
inherited. A local sweep job runs its Modal function body this way.

Not multiprocessing's spawn: its child first imports the parent's `__main__` again, and under
`python -m cats_model.train -m` that is torch and Lightning, about 4 s of CPU per job before a body that starts a
training process of its own anyway. This child imports only what the pickled function needs. The file runs as a
script (so its folder, cats_model/, comes first on the child's path until it takes the parent's: no module there
may share a name with the standard library, which tests/test_fresh_process.py holds) and imports nothing outside
the standard library.
"""

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path


class ProcessDied(RuntimeError):
    """The process ended without handing back a result: killed, or it exited."""


class RemoteTraceback(Exception):
    """The child's traceback, chained to its exception as concurrent.futures chains a worker's."""

    def __str__(self) -> str:
        return self.args[0]


def in_fresh_process(function, *args):
    """`function(*args)` in a new process, sharing this one's output; its result, or its exception raised here."""
    with tempfile.TemporaryDirectory(prefix="fresh-process-") as folder:
        task, outcome = Path(folder) / "task.pickle", Path(folder) / "outcome.pickle"
        with open(task, "wb") as file:
            pickle.dump(sys.path, file)  # first: where the child finds the function's module
            pickle.dump((function, args), file)
        with subprocess.Popen([sys.executable, __file__, str(task), str(outcome)]) as process:
            try:
                process.wait()
            except BaseException:  # Ctrl-C reached the child too: let it finish writing what it writes
                process.wait()
                raise
        if not outcome.is_file():
            raise ProcessDied(f"its process {_ended(process.returncode)} before it returned")
        succeeded, value, child_traceback = pickle.loads(outcome.read_bytes())
    if succeeded:
        return value
    raise value from RemoteTraceback(child_traceback)


def _ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _run(task: str, outcome: str) -> None:
    with open(task, "rb") as file:
        sys.path[:] = pickle.load(file)
        payload = file.read()
    try:
        function, args = pickle.loads(payload)  # a function of the parent's __main__ is not found here
        result = pickle.dumps((True, function(*args), None))
    except BaseException as err:  # handed back, as a pool hands back its workers' exceptions
        result = _pickled_failure(err, traceback.format_exc())
    with open(outcome + ".tmp", "wb") as file:
        file.write(result)
    os.replace(outcome + ".tmp", outcome)


def _pickled_failure(err: BaseException, child_traceback: str) -> bytes:
    """The exception as the parent will load it, or its text where it would not come back whole (an exception
    that cannot be pickled, or whose class cannot be rebuilt from its arguments)."""
    try:
        pickled = pickle.dumps((False, err, child_traceback))
        pickle.loads(pickled)
        return pickled
    except Exception:
        return pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {err}"), child_traceback))


if __name__ == "__main__":
    _run(*sys.argv[1:])
