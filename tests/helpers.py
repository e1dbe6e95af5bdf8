"""What several test modules share: the overrides of a tiny run, and running the training command."""

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

from cats_model.paths import PROJECT_ROOT

APP_FILE = PROJECT_ROOT / "launch" / "modal_app.py"  # the Modal app, as `modal run` is given it

# Tiny synthetic runs: a few images per class at 32 px, one CPU process.
FAST = [
    "data=synthetic",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.synthetic.trainval_per_class=6",
    "data.synthetic.test_per_class=2",
    "data.synthetic.dog_breeds=2",
    "model=mobilenet_v3_small",
    "model.pretrained=false",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def fast_without(*prefixes: str) -> list[str]:
    """FAST without the overrides that start with one of `prefixes`, for a test that sets those itself."""
    return [override for override in FAST if not override.startswith(prefixes)]


# A remote run on the CPU: a Modal run's preset is trainer=gpu, these overrides move it to the CPU.
REMOTE_CPU = [*fast_without("trainer="), "trainer.accelerator=cpu"]


def modal_run(overrides: list[str]) -> tuple[str, list[str]]:
    """The first arguments of the Modal `train` function for a run of `overrides`, as the entrypoint sends them:
    the config it composed and checked, and the overrides for the record."""
    from cats_model.cloud.run_config import compose_run
    from cats_model.cloud.settings import load_settings

    return compose_run(overrides, load_settings())[0], overrides


def run_cli(*overrides: str, cwd=None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m cats_model.train OVERRIDES` in a process of its own, as a user types it."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "cats_model.train", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def run_cli_in_process(*overrides: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m cats_model.train OVERRIDES` run in this process: the module's `__main__` block itself (runpy), its
    output and exit status as its process would give them, without the 4 s of importing torch and Lightning again.
    For what the command says; the tests that start it in a process of its own hold what only a process shows
    (its start, its signals, a library's warnings, which pytest catches in this one)."""
    # As run_cli: without HYDRA_FULL_ERROR, Hydra's short error messages.
    return run_module_in_process(
        "cats_model.train", *overrides, env_extra={**(env_extra or {}), "HYDRA_FULL_ERROR": None}
    )


def run_module_in_process(
    module: str, *args: str, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` run in this process, as run_cli_in_process runs the training command."""
    with like_a_process([module, *args], env_extra or {}) as output:
        code = exit_status(lambda: run_main_block(module))
    return subprocess.CompletedProcess(["python", "-m", module, *args], code, **output)


def run_main_block(module: str) -> None:
    """The `__main__` block of `module`, imported already (by this process, or the server it was forked from)."""
    import runpy
    import warnings

    with warnings.catch_warnings():
        # runpy's note that the module was imported already: its `__main__` block runs in a copy of its own
        warnings.filterwarnings("ignore", f"'{module}' found in sys.modules", RuntimeWarning)
        runpy.run_module(module, run_name="__main__", alter_sys=True)


@contextlib.contextmanager
def like_a_process(argv: list[str], env: dict[str, str | None]):
    """For a command's main run in this process: sys.argv and the environment set (None: unset), and its stdout and
    stderr, Python's and those of the processes it starts alike, into files as a pipe would take its process's; the
    yielded dict gets their text at the end. Everything is put back, the logging handlers it set up included."""
    root = logging.getLogger()
    saved_logging = root.handlers[:], root.level
    saved_env = {key: os.environ.get(key) for key in env}
    saved_argv, saved_streams = sys.argv, (sys.stdout, sys.stderr)
    output = {}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        for stream in saved_streams:
            stream.flush()
        saved_fds = os.dup(1), os.dup(2)
        try:
            set_environment(env)
            sys.argv = list(argv)
            output_into(out, err)
            yield output
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
            sys.argv = saved_argv
            set_environment(saved_env)
            for handler in set(root.handlers) - set(saved_logging[0]):
                root.removeHandler(handler)
                handler.close()
            root.handlers[:], root.level = saved_logging
            out.seek(0)
            err.seek(0)
            output.update(stdout=out.read(), stderr=err.read())


def output_into(out, err) -> None:
    """This process's stdout and stderr, Python's and its children's alike, into the open files `out` and `err`."""
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (fd 1 itself, put back by the caller)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def set_environment(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def exit_status(main: Callable[[], object]) -> int:
    """The status the process of `main` would exit with: 0 when it returns, else its SystemExit's."""
    try:
        main()
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    return 0


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed command that says what is wrong in its last line, each of `fragments` in it, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last
