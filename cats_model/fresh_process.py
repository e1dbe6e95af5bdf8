"""`function(*args)` in a new Python process, as a container starts fresh: no state, threads or CUDA context
inherited. A local sweep job runs its Modal function body this way.

Not multiprocessing's spawn: its child first imports the parent's `__main__` again, and under
`python -m cats_model.train -m` that is torch and Lightning, about 4 s of CPU per job before a body that starts a
training process of its own anyway. This child imports only what the pickled function needs. The file runs as a
script and imports nothing outside the standard library before it takes the parent's `sys.path`.
"""

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path


class ProcessDied(RuntimeError):
    """The process ended without handing back a result: killed, or it exited."""


def in_fresh_process(function, *args):
    """`function(*args)` in a new process, sharing this one's output; its result, or its exception raised here."""
    with tempfile.TemporaryDirectory(prefix="fresh-process-") as folder:
        task, outcome = Path(folder) / "task.pickle", Path(folder) / "outcome.pickle"
        with open(task, "wb") as file:
            pickle.dump(sys.path, file)  # first: where the child finds the function's module
            pickle.dump((function, args), file)
        ended = subprocess.run([sys.executable, __file__, str(task), str(outcome)])
        if not outcome.is_file():
            raise ProcessDied(
                f"the process running {getattr(function, '__qualname__', function)} ended (exit status "
                f"{ended.returncode}) without a result"
            )
        succeeded, value = pickle.loads(outcome.read_bytes())
    if succeeded:
        return value
    raise value


def _run(task: str, outcome: str) -> None:
    with open(task, "rb") as file:
        sys.path[:] = pickle.load(file)
        payload = file.read()
    try:
        function, args = pickle.loads(payload)  # a function of the parent's __main__ is not found here
        result = pickle.dumps((True, function(*args)))
    except BaseException as err:  # handed back, as a pool hands back its workers' exceptions
        try:
            result = pickle.dumps((False, err))
        except Exception:  # an exception that cannot be pickled: its text
            result = pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {err}")))
    with open(outcome + ".tmp", "wb") as file:
        file.write(result)
    os.replace(outcome + ".tmp", outcome)


if __name__ == "__main__":
    _run(*sys.argv[1:])
