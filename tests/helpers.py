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


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed command that says what is wrong in its last line, each of `fragments` in it, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last
