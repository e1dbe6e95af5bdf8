"""The bodies of the Modal functions as plain functions: launch/modal_app.py wraps them, tests run them via .local().

Mount points come from CATS_MODEL_DATA_DIR / CATS_MODEL_OUTPUT_DIR (the image sets them to the volumes of
modal.yml; tests point them at temporary folders), so the same body runs in a container and on a laptop.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from cats_model.config import compose_train_config
from cats_model.errors import UserError

DATA_ENV, OUTPUT_ENV = "CATS_MODEL_DATA_DIR", "CATS_MODEL_OUTPUT_DIR"
USER_ERROR_EXIT = 2  # what `python -m cats_model.train` exits with on a UserError
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def data_dir() -> Path:
    return Path(os.environ[DATA_ENV])


def output_dir() -> Path:
    return Path(os.environ[OUTPUT_ENV])


def in_container() -> bool:
    # modal.is_local() is also True in child processes of a container; this variable is not.
    return os.environ.get("MODAL_IS_REMOTE") == "1"


def fresh_run_name() -> str:
    """Readable and unique: a rerun the same day (or second) never lands in an earlier run's folder."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_dir(run_name: str) -> Path:
    if not RUN_NAME.match(run_name):
        raise UserError(f"run name {run_name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    return output_dir() / "runs" / run_name


def prepare_data(commit: Callable[[], None] | None) -> dict:
    """Download and verify Oxford-IIIT Pet into the data volume; a no-op when it is already complete."""
    from cats_model.download import default_root, download, is_complete

    root = default_root()  # <CATS_MODEL_DATA_DIR>/oxford-iiit-pet, where data=cat_breeds looks
    if not is_complete(root):
        download(root)
        if commit:
            commit()
    return {"root": str(root)}


def train(
    overrides: list[str],
    run_name: str,
    gpu_count: int = 1,
    commit: Callable[[], None] | None = None,
    commit_interval: float = 15.0,
) -> dict:
    """Run `python -m cats_model.train` on the run's folder (resuming it) and return its metrics.

    Training runs in a child process so that Lightning's DDP relaunches `cats_model.train`, not Modal's own
    entrypoint. A user error comes back as {"error": ...} instead of an exception, so Modal never retries it.
    """
    try:
        directory = run_dir(run_name)
        compose_train_config(overrides)  # a bad override is deterministic: report it, never retry it
    except UserError as err:
        return {"run_name": run_name, "error": str(err)}
    # The GPU preset for the container's GPU count, unless the overrides choose a trainer themselves.
    trainer = (
        []
        if any(o.startswith("trainer=") for o in overrides)
        else [f"trainer={'ddp' if gpu_count > 1 else 'gpu'}"]
    )
    command = [
        sys.executable, "-m", "cats_model.train", *trainer, *overrides,
        f"run_name={run_name}", f"hydra.run.dir={directory}",
    ]  # fmt: skip
    env = {**os.environ, DATA_ENV: str(data_dir()), OUTPUT_ENV: str(output_dir()), "PYTHONUNBUFFERED": "1"}
    with CheckpointCommitter(directory / "checkpoints", commit, commit_interval):
        returncode, last_line = _run_streaming(command, env)
    result = {"run_name": run_name, "run_dir": str(directory)}
    if returncode == USER_ERROR_EXIT:
        return {**result, "error": last_line.removeprefix("error: ")}
    if returncode != 0:
        raise RuntimeError(f"training of run {run_name} exited with {returncode}: {last_line}")
    return {**result, **json.loads((directory / "metrics.json").read_text())}


def bench(argv: list[str], commit: Callable[[], None] | None) -> dict:
    """`python -m cats_model.bench ARGV` on this machine; its JSON lands in <outputs>/bench/<fresh name>.json."""
    from cats_model.bench.cli import main

    target = output_dir() / "bench" / f"{fresh_run_name()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    results = main([*argv, "--json", str(target)])
    if commit:
        commit()
    return results


def _run_streaming(command: list[str], env: dict) -> tuple[int, str]:
    """Run `command`, passing its output through as it comes; return its exit code and last stderr line."""
    last_line = ""
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1) as process:
        for line in process.stderr:
            sys.stderr.write(line)
            if line.strip():
                last_line = line.strip()
    return process.returncode, last_line


class CheckpointCommitter:
    """Commits the outputs volume whenever the checkpoint folder changes, and once at the end.

    A preempted container loses what was not committed; committing each new last.ckpt bounds that loss to
    the work since the last checkpoint.
    """

    def __init__(self, folder: Path, commit: Callable[[], None] | None, interval: float):
        self.folder, self.commit, self.interval = folder, commit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._seen = self._state()

    def _state(self) -> frozenset:
        if not self.folder.is_dir():
            return frozenset()
        state = set()
        for path in self.folder.iterdir():
            try:  # a checkpoint can be replaced between listing and stat
                stat = path.stat()
            except FileNotFoundError:
                continue
            if not path.name.startswith("."):  # temporary files of atomic writes
                state.add((path.name, stat.st_mtime_ns, stat.st_size))
        return frozenset(state)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            state = self._state()
            if state != self._seen:
                self._seen = state
                self.commit()

    def __enter__(self):
        if self.commit:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.commit:
            self._stop.set()
            self._thread.join()
            self.commit()  # metrics.json and the final checkpoints
