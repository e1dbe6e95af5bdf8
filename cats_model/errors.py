"""Errors a user can cause, and how they reach the terminal: one line, a non-zero exit."""

import contextlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from hydra.errors import CompactHydraException

# A training stopped by SIGTERM (timeout, docker stop, systemd, Slurm, Modal's preemption): what a shell reports
# for a process killed by that signal, so that `train && export` stops there and a caller can tell it apart.
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143
# A training stopped at its Modal call's deadline (cloud/deadline.py): a new call continues the run (EX_TEMPFAIL).
CONTINUE_EXIT = 75
# Every entry point's exit when it ends in one line (a UserError, also a Modal run that failed on every attempt):
# 2, the usage-error code of argparse and click, and what a Modal container reads as "do not retry"
# (cloud/remote.py). 1 stays for a crash with its traceback.
USER_ERROR_EXIT = 2
# Where a parent process (the Modal train function) asks a training process to say how it ended, as JSON
# {"exit": code, "error": one line}: read instead of the process's stderr.
OUTCOME_ENV = "CATS_MODEL_OUTCOME_FILE"


class UserError(CompactHydraException):
    """Something the user can fix (a missing dataset, a bad override): shown as one line, never retried.

    A CompactHydraException, so that where Hydra reports it (a sweep's failed job, a launcher) it prints the
    message alone, without a traceback.
    """


@contextlib.contextmanager
def exit_on_user_error():
    """Turn a UserError into one line on stderr and a non-zero exit; HYDRA_FULL_ERROR=1 keeps the traceback."""
    try:
        yield
    except Exception as err:
        cause = user_error_in(err)
        if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(cause))


def fail(line: str, exit_code: int = USER_ERROR_EXIT) -> NoReturn:
    """End this process for a reason a person can act on: `error: <line>` on stderr, the outcome for a parent
    that asked for one, and `exit_code`."""
    print(f"error: {line}", file=sys.stderr, flush=True)
    report_outcome(exit_code, line)
    sys.exit(exit_code)


def report_outcome(exit_code: int, line: str) -> None:
    """Tell the parent process how this one ends, where it asked (OUTCOME_ENV); nothing otherwise."""
    if path := os.environ.get(OUTCOME_ENV):
        Path(path).write_text(json.dumps({"exit": exit_code, "error": line}))


@contextlib.contextmanager
def crash_reported():
    """An exception that ends the process as a crash (a user error has become `fail` by then): its line, as a
    traceback ends with it, in the outcome for the parent; then raised on."""
    try:
        yield
    except Exception as err:
        report_outcome(1, traceback.format_exception_only(err)[0].strip())
        raise


def user_error_in(err: BaseException | None) -> UserError | None:
    """The UserError behind `err`, also when a wrapper (Hydra's instantiate) re-raised it as its cause."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err
