"""The bodies of the Modal functions as plain functions: launch/modal_app.py wraps them, tests run them via .local().

Mount points come from CATS_MODEL_DATA_DIR / CATS_MODEL_OUTPUT_DIR (the image sets them to the volumes of
modal.yml; tests and the local sweep backend point them at local folders), so the same body runs in a container
and on a laptop.
"""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cats_model import run_layout
from cats_model.atomic import atomic_write_text
from cats_model.cloud.ending import how_it_ended
from cats_model.cloud.prepared import data_setting, is_prepared, needs_oxford_download, record_prepared
from cats_model.cloud.run_config import read_config, write_primary_config
from cats_model.cloud.settings import Call, load_settings
from cats_model.errors import CONTINUE_EXIT, OUTCOME_ENV, SIGTERM_EXIT, USER_ERROR_EXIT, UserError
from cats_model.run_layout import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    RECORD_FILE,
    RUN_NAME,
    RUN_NAME_RULE,
    RUNS_DIR,
    fresh_run_name,
    handover_file,
    metrics_file,
)

DATA_ENV, OUTPUT_ENV = "CATS_MODEL_DATA_DIR", "CATS_MODEL_OUTPUT_DIR"
# A training process stopped by SIGTERM (a preemption, or the container being stopped): killed by it, or exiting
# with the code its handler gives.
SIGTERM_EXITS = (-signal.SIGTERM, SIGTERM_EXIT)
# The cgroup's count of processes the kernel killed for memory (cgroup v2); tests point it at a file of theirs.
MEMORY_EVENTS = Path(os.environ.get("CATS_MODEL_MEMORY_EVENTS", "/sys/fs/cgroup/memory.events"))


def data_dir() -> Path:
    return Path(os.environ[DATA_ENV])


def output_dir() -> Path:
    return Path(os.environ[OUTPUT_ENV])


def run_dir(run_name: str) -> Path:
    """The run's folder under the outputs mount."""
    if not RUN_NAME.fullmatch(run_name):
        raise UserError(f"run name {run_name!r} must be {RUN_NAME_RULE}")
    return run_layout.run_dir(output_dir(), run_name)


def prepare_data(configs: list[str], commit: Callable[[], None] | None) -> dict:
    """The data of the runs about to start (their configs, as cats_model.cloud.run_config sends them), made once on
    the data volume before any of them starts: Oxford-IIIT Pet downloaded and verified (when a run reads it), then
    for each distinct data config the files generated or listed and the decoded-image cache built. N jobs of a
    sweep then find it all ready instead of each decoding the dataset on its GPU. Data prepared by an earlier call
    is left as it is (cats_model.cloud.prepared). A run whose data fails here is left to fail in its own call, with
    its own message."""
    from hydra.utils import instantiate

    from cats_model.download import default_root, download, is_complete

    distinct = {}
    for text in configs:
        cfg = read_config(text)
        distinct.setdefault(json.dumps(data_setting(cfg), sort_keys=True), cfg)
    root = default_root()  # <CATS_MODEL_DATA_DIR>/oxford-iiit-pet, where data=cat_breeds looks
    if any(needs_oxford_download(cfg) for cfg in distinct.values()) and not is_complete(root):
        download(root)
    prepared = 0
    for cfg in distinct.values():
        if is_prepared(cfg):
            print(f"data: {cfg.data.root} is prepared already", flush=True)
            continue
        try:
            datamodule = instantiate(cfg.data, _convert_="all")
            datamodule.prepare_data()
            datamodule.setup("fit")  # builds the decoded-image cache of the cached pipeline
            record_prepared(cfg, datamodule)
            prepared += 1
        except Exception as err:
            print(
                f"warning: preparing data for a run failed ({err}); the run prepares it itself",
                file=sys.stderr,
            )
    if commit:
        commit()
    return {"root": str(root), "prepared": prepared}


def train(
    config: str,
    overrides: list[str],
    run_name: str,
    call: dict,
    commit: Callable[[], None] | None = None,
    commit_interval: float = 15.0,
    continue_run: Callable[[str, list[str], str, Call], str] | None = None,
    call_id: str | None = None,
) -> dict:
    """Run `python -m cats_model.train` on `config` (the run's config, composed and checked where the run was typed:
    cats_model.cloud.run_config) in the run's folder (resuming it), and return its metrics. `overrides`: the run's
    overrides as typed, kept in its record.

    Training runs in a child process so that Lightning's DDP relaunches `cats_model.train`, not Modal's own
    entrypoint. What fails the same way on every attempt (a user error of the child, CUDA out of memory) comes back
    as {"error": ...}, so Modal never retries it; only crashes raise. A call that reaches its deadline a margin
    before its timeout saves the last checkpoint, and `continue_run(config, overrides, run_name, next call)` submits
    the call that continues the run; the result then names it: {"continued_in": call id}.
    """
    started = time.time()
    call = Call(**call)
    try:
        directory = run_dir(run_name)
    except UserError as err:  # deterministic: reported, never retried
        return {"run_name": run_name, "error": str(err)}
    if call_id and (handed_to := _handed_over(directory, call_id)):
        # A retry of a call that already submitted its continuation (preempted in between): never train beside it.
        return {
            "run_name": run_name,
            "run_dir": str(directory),
            "calls": call.segment,
            "continued_in": handed_to,
        }
    env = {**os.environ, DATA_ENV: str(data_dir()), OUTPUT_ENV: str(output_dir()), "PYTHONUNBUFFERED": "1"}
    record = {"run_name": run_name, "call_id": call_id, "overrides": overrides, **call.to_dict()}
    atomic_write_text(directory / RECORD_FILE, json.dumps({**record, "status": "running"}, indent=2))
    _commit_or_warn(
        commit, "the run's record"
    )  # a second submission of this run finds this call and follows it
    with (
        tempfile.TemporaryDirectory() as scratch,
        CheckpointCommitter(directory / CHECKPOINT_DIR, commit, commit_interval),
    ):
        command = training_command(config, run_name, directory, call, started, Path(scratch))
        oom_kills = _oom_kills()
        returncode, cause = _run_training(command, env, Path(scratch))
        seconds = time.time() - started
        status, result = _outcome(returncode, cause, directory, call, seconds, _oom_kills() > oom_kills)
        result = {"run_name": run_name, "run_dir": str(directory), **result}
        record.update(status=status, container_s=result["container_s"], error=result.get("error"))
        atomic_write_text(directory / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    # Committed: the call that continues the run starts from this one's last checkpoint.
    if status in ("crashed", "preempted"):  # raised: Modal retries the call, which resumes the run
        raise RuntimeError(f"training of run {run_name} failed: {result['error']}")
    if status == "continued":
        result["continued_in"] = continue_run(config, overrides, run_name, call.next(seconds))
        if call_id:
            atomic_write_text(
                handover_file(directory, call_id),
                json.dumps({"continued_in": result["continued_in"]}),
            )
            # Never a raise here: Modal would retry this call beside the continuation it has just submitted.
            _commit_or_warn(commit, "the call's handover")
    return result


def _commit_or_warn(commit: Callable[[], None] | None, what: str) -> None:
    """A commit that only helps (a record, a handover): a failure is a warning; the final commit still raises."""
    if commit:
        try:
            commit()
        except Exception as err:
            print(f"warning: committing {what} to the outputs volume failed ({err})", file=sys.stderr)


def _handed_over(directory: Path, call_id: str) -> str | None:
    """The call that `call_id` already submitted to continue the run, if it did."""
    handover = handover_file(directory, call_id)
    return json.loads(handover.read_text())["continued_in"] if handover.is_file() else None


def _oom_kills() -> int:
    """How many processes the kernel has killed in this container for want of memory (0 where unknown)."""
    try:
        for line in MEMORY_EVENTS.read_text().splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill":
                return int(count)
    except (OSError, ValueError):
        pass
    return 0


def training_command(
    config: str,
    run_name: str,
    directory: Path,
    call: Call,
    started: float,
    scratch: Path,
) -> list:
    """The training process of one call: the run's config (written into `scratch`), the run's name and folder, and
    the deadline a margin before the call's timeout."""
    deadline = []
    if call.timeout:
        at = started + call.timeout - load_settings().train["stop_before_timeout"]
        stop = "+callbacks.stop_before_deadline"
        deadline = [
            f"{stop}._target_=cats_model.cloud.deadline.StopBeforeDeadline",
            f"{stop}.at={at:.0f}",
            f"{stop}.checkpoint=${{paths.checkpoint_dir}}/{LAST_CHECKPOINT}",
        ]
    return [
        sys.executable, "-m", "cats_model.train", *write_primary_config(config, scratch),
        *deadline, f"run_name={run_name}", f"hydra.run.dir={directory}",
    ]  # fmt: skip


def _outcome(
    returncode: int, cause: str, directory: Path, call: Call, seconds: float, out_of_memory: bool = False
) -> tuple[str, dict]:
    """(status, result) of a training process that exited with `returncode`."""
    spent = round(call.spent_s + seconds, 2)
    base = {"gpu": call.gpu, "calls": call.segment, "container_s": spent}
    if returncode == 0:
        metrics = json.loads(metrics_file(directory).read_text())
        return "completed", {**metrics, **base}
    if returncode == USER_ERROR_EXIT:
        return "failed", {**base, "error": cause}
    if returncode in SIGTERM_EXITS:
        return "preempted", {
            **base,
            "error": "stopped by SIGTERM (a preemption?); Modal retries the call, which resumes it",
        }
    if returncode == -signal.SIGKILL and out_of_memory:
        memory = load_settings().train["memory"][1]  # [request, limit]
        error = (
            f"training of run {directory.name} was killed by the system: out of memory (the container has "
            f"{memory} MiB, train.memory in modal.yml); raise train.memory, or lower data.batch_size or "
            "data.num_workers"
        )
        return "failed", {**base, "error": error}  # the same on every attempt: never retried
    if returncode == CONTINUE_EXIT:
        ceiling = load_settings().train["max_hours"]
        if spent < ceiling * 3600:
            return "continued", base
        error = (
            f"run {directory.name} stopped unfinished after {spent / 3600:.1f} h of calls (train.max_hours in "
            f"modal.yml); continue it with the same overrides and run_name={directory.name}"
        )
        return "stopped", {**base, "error": error}
    return "crashed", {**base, "error": how_it_ended(returncode, cause, directory / "train.log")}


def bench(argv: list[str], commit: Callable[[], None] | None) -> dict:
    """`python -m cats_model.bench ARGV` on this machine; its JSON lands in <outputs>/bench/<fresh name>.json."""
    from cats_model.bench.cli import main

    target = output_dir() / "bench" / f"{fresh_run_name()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    results = main([*argv, "--json", str(target)])
    if commit:
        commit()
    return results


def tensorboard(reload: Callable[[], None] | None):
    """TensorBoard's WSGI app over every run on the outputs volume; `reload` (the volume's) runs on each page
    load, so that runs committed since the container started appear (as in Modal's TensorBoard example)."""
    from tensorboard.backend.application import TensorBoardWSGIApp
    from tensorboard.program import TensorBoard

    board = TensorBoard()
    # The fast loader's data server keeps event files open, and Volume.reload() fails while files are open:
    # the page would never show a new run. The Python loader opens a file only to read it.
    board.configure(logdir=str(output_dir() / RUNS_DIR), load_fast="false")
    data_provider, multiplexer = board._make_data_provider()
    app = TensorBoardWSGIApp(
        board.flags, board.plugin_loaders, data_provider, board.assets_zip_provider, multiplexer
    )

    def reloading(environ, start_response):
        if reload and environ.get("PATH_INFO") in ("", "/"):
            try:
                reload()
            except Exception as err:  # files open elsewhere can block a reload: the page shows what it has
                print(f"warning: reloading the outputs volume failed: {err}", file=sys.stderr)
        return app(environ, start_response)

    return reloading


def _run_training(command: list[str], env: dict, scratch: Path) -> tuple[int, str]:
    """Run the training process, its output going where this one's goes; return its exit code and the line that
    says why it failed, from the outcome it reports into `scratch` (a user error's line, or a crash's exception),
    else ''."""
    outcome = scratch / "outcome.json"
    returncode = subprocess.call(command, env={**env, OUTCOME_ENV: str(outcome)})
    reported = json.loads(outcome.read_text()) if outcome.is_file() else {}
    return returncode, reported.get("error", "")


class CheckpointCommitter:
    """Commits the outputs volume whenever the checkpoint folder changes, and once at the end.

    A preempted container loses what was not committed; committing each new last checkpoint bounds that loss to
    the work since the last checkpoint. The folder is looked at every CHECK_S (a listing), and a change is
    committed at once unless the last commit was less than `interval` seconds ago: the first checkpoint is safe
    within a second, and checkpoints written every few steps cost one commit per interval. A failed commit is
    logged and tried again an interval later; a failed final commit raises, so that Modal retries the call (which
    resumes from what was committed).
    """

    CHECK_S = 1.0

    def __init__(self, folder: Path, commit: Callable[[], None] | None, interval: float):
        self.folder, self.commit, self.interval = folder, commit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._seen = self._state()
        self._warned: set[str] = set()

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
        last_commit = -math.inf
        while not self._stop.wait(min(self.CHECK_S, self.interval)):
            state = self._state()
            if state == self._seen or time.monotonic() - last_commit < self.interval:
                continue
            last_commit = time.monotonic()
            try:
                self.commit()
            except Exception as err:  # the volume may refuse a commit for a while: try again next time
                # Once per kind of failure: a commit's reload fails for as long as the run's logs are open.
                if str(err) not in self._warned:
                    self._warned.add(str(err))
                    print(
                        f"warning: committing the outputs volume failed ({err}); trying again",
                        file=sys.stderr,
                    )
            else:
                self._seen = state

    def __enter__(self):
        if self.commit:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.commit:
            self._stop.set()
            self._thread.join()
            try:
                self.commit()  # the metrics, the record and the final checkpoints
            except Exception as err:
                raise RuntimeError(
                    f"the run's files could not be committed to the outputs volume: {err}"
                ) from err
