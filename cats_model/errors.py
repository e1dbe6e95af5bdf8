"""Errors a user can cause, and how they reach the terminal: one line, a non-zero exit."""

import contextlib
import os
import signal
import sys

from hydra.errors import CompactHydraException

# A training stopped by SIGTERM (timeout, docker stop, systemd, Slurm, Modal's preemption): what a shell reports
# for a process killed by that signal, so that `train && export` stops there and a caller can tell it apart.
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143
# A training stopped at its Modal call's deadline (cloud/deadline.py): a new call continues the run (EX_TEMPFAIL).
CONTINUE_EXIT = 75
# Every entry point's exit on a UserError: 2, the usage-error code of argparse and click, and
# what a Modal container reads as "do not retry" (cloud/remote.py). 1 stays for work that failed.
USER_ERROR_EXIT = 2


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
        print(f"error: {cause}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)


def user_error_in(err: BaseException | None) -> UserError | None:
    """The UserError behind `err`, also when a wrapper (Hydra's instantiate) re-raised it as its cause."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err
