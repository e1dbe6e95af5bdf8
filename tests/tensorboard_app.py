"""TensorBoard over the outputs volume, as its Modal container sees it (tests/test_modal_tensorboard.py): the body
of launch/modal_app.py's `tensorboard` (cats_model.cloud.remote.tensorboard), driven from inside its container,
while other containers write runs and commit them."""

import json
import time

import modal

from cats_model.cloud import remote
from cats_model.cloud.settings import load_settings

outputs_volume_name, outputs_mount = load_settings().volume("outputs")
volume = modal.Volume.from_name(outputs_volume_name, create_if_missing=True)
app = modal.App("tensorboard-probe", image=modal.Image.debian_slim().env({remote.OUTPUT_ENV: outputs_mount}))


@app.function(volumes={outputs_mount: volume})
def write_run(run: str) -> None:
    """A run's TensorBoard log, as training writes it, committed."""
    from tensorboard.summary import Writer

    writer = Writer(str(remote.output_dir() / "runs" / run / "tensorboard"))
    writer.add_scalar("train/loss", 1.0, step=0)
    writer.close()
    volume.commit()


@app.function(volumes={outputs_mount: volume})
def view(new_run: str, wait_s: float = 30.0) -> dict:
    """The runs the page lists when first loaded, and after a reload once `new_run` was written elsewhere."""
    from werkzeug.test import Client

    client = Client(remote.tensorboard(reload=volume.reload))

    def runs_after_load(expected: int) -> list[str]:
        client.get("/")  # a page load: reloads the volume
        deadline = time.time() + wait_s
        while True:  # TensorBoard reads the logs in the background
            runs = sorted(json.loads(client.get("/data/runs").get_data()))
            if len(runs) >= expected or time.time() > deadline:
                return runs
            time.sleep(0.2)

    first = runs_after_load(1)
    write_run.remote(new_run)
    return {"first": first, "reloaded": runs_after_load(2)}
