"""What several test modules share: the overrides of a tiny run, and running the training command."""

import os
import subprocess
import sys

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


# A remote run on the CPU: the Modal function picks trainer=gpu, these overrides move it to the CPU.
REMOTE_CPU = [*fast_without("trainer="), "trainer.accelerator=cpu"]


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
    For what the command says; the tests that start it in a process of its own hold what only a process shows.
    The environment, the command line and the logging that Hydra sets up are put back afterwards."""
    import contextlib
    import io
    import logging
    import runpy
    import warnings

    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    saved_env = {key: os.environ.get(key) for key in [*(env_extra or {}), "HYDRA_FULL_ERROR"]}
    saved_argv = sys.argv
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    os.environ.pop("HYDRA_FULL_ERROR", None)  # as run_cli: Hydra's short error messages
    os.environ.update(env_extra or {})
    sys.argv = ["cats_model.train", *overrides]
    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(),
        ):
            # runpy's note that the module was imported already: its `__main__` block runs in a copy of its own
            warnings.filterwarnings("ignore", "'cats_model.train' found in sys.modules", RuntimeWarning)
            runpy.run_module("cats_model.train", run_name="__main__", alter_sys=True)
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        for handler in root.handlers[:]:
            if handler not in saved_logging[0]:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:], root.level = saved_logging
    return subprocess.CompletedProcess(["python", "-m", "cats_model.train", *overrides], code, stdout.getvalue(),
                                       stderr.getvalue())  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed command that says what is wrong in its last line, each of `fragments` in it, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last
