"""The outputs volume read from this machine through Modal's Volume API: no container, no image build.

`runs/<name>/...` as training leaves it (see cats_model.cloud.remote); paths are relative to the volume's root.
"""

from pathlib import PurePosixPath

from cats_model.errors import UserError

METRICS = "metrics.json"  # written when a run has finished (trained and tested)


def volume_files(volume, folder: str) -> dict[str, object]:
    """{path: FileEntry} of every file under `folder` on the volume ({} when there is no such folder)."""
    from modal.exception import NotFoundError

    try:
        entries = volume.listdir(folder, recursive=True)
    except NotFoundError:
        return {}
    return {entry.path.lstrip("/"): entry for entry in entries if entry.type.name == "FILE"}


def read(volume, path: str) -> bytes:
    return b"".join(volume.read_file(path))


def served_run(run: str, volume, volume_name: str) -> str:
    """The run a deployment serves: `run`, or the run whose metrics.json was written last for "latest", refused
    in one line unless its folder on the volume holds a checkpoint (every container would fail to start)."""
    runs = volume_files(volume, "runs")
    if run == "latest":
        finished = sorted(
            (entry.mtime, PurePosixPath(path).parent.name)
            for path, entry in runs.items()
            if PurePosixPath(path).name == METRICS and len(PurePosixPath(path).parts) == 3
        )
        if not finished:
            raise UserError(
                f"no finished run on the outputs volume {volume_name} (none has runs/NAME/{METRICS}): train one "
                "first, or name a run with serve.run in modal.yml or CATS_MODEL_SERVE_RUN"
            )
        run = finished[-1][1]
    checkpoints = [p for p in runs if p.startswith(f"runs/{run}/checkpoints/") and p.endswith(".ckpt")]
    if not checkpoints:
        raise UserError(
            f"serve run {run!r} has no checkpoint on the outputs volume {volume_name} (runs/{run}/checkpoints/); "
            f"`modal volume ls {volume_name} runs/` lists the runs"
        )
    return run
