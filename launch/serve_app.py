"""Serve a trained model on Modal: `modal deploy launch/serve_app.py` (`modal serve` while developing).

The same ASGI app as `python -m cats_model.serve`, in a Modal class that loads the best checkpoint of the run
named in modal.yml's `serve` section (or `CATS_MODEL_SERVE_RUN=NAME modal deploy ...`) from the outputs volume:
once per deployment on CPU (in the memory snapshot that new containers restore), once per container on a GPU. `@modal.concurrent` hands the requests that arrive together to one container, where the
app's batcher runs them as one forward pass. (A class with a `@modal.batched` method may have no other
methods, so Modal's own batching would need a second container pool behind the web one.)
"""

import os

import modal

from cats_model.cloud import remote
from cats_model.cloud.image import project_image
from cats_model.cloud.served_run import checked_run, served_run
from cats_model.cloud.settings import load_settings
from cats_model.errors import exit_on_user_error
from cats_model.serve.options import ServeOptions
from cats_model.system import in_container

RUN_ENV = "CATS_MODEL_SERVE_RUN"
settings = load_settings()
serve = settings.serve
outputs_volume_name, outputs_mount = settings.volume("outputs")
outputs_volume = modal.Volume.from_name(outputs_volume_name, create_if_missing=True)

# Decided where `modal deploy` runs, from the outputs volume itself (read with no container), and carried into
# the container by the image: a run that is not there fails here in one line, not in every container's start;
# `latest` becomes the run finished last by now, the one a deployment (and its memory snapshot) keeps serving.
with exit_on_user_error():
    if serve["gpu"]:
        settings.checked_gpu(serve["gpu"], "serve.gpu")
    options = ServeOptions.from_settings(serve["options"] or {}, "modal.yml serve.options")
    run = checked_run(os.environ.get(RUN_ENV) or str(serve["run"]))
    if not in_container():
        run = served_run(run, outputs_volume, outputs_volume_name)

# Without a GPU: CPU-only torch, no CUDA libraries.
image = project_image({remote.OUTPUT_ENV: outputs_mount, RUN_ENV: run}, gpu=bool(serve["gpu"]))

app = modal.App(serve["app_name"], image=image)

SERVER_OPTIONS = dict(
    gpu=serve["gpu"],
    **settings.resources("serve"),
    scaledown_window=serve["scaledown_window"],
    enable_memory_snapshot=serve["memory_snapshot"],
    timeout=serve["timeout"],
    volumes={outputs_mount: outputs_volume},
)


@app.cls(**SERVER_OPTIONS)
@modal.concurrent(max_inputs=serve["concurrency"])
class Server:
    # On CPU the loaded model is in the memory snapshot: a new container restores it instead of importing torch
    # and reading the checkpoint. A CUDA model cannot be snapshotted: with a GPU, loading follows the restore.
    @modal.enter(snap=not serve["gpu"])
    def load(self):
        from cats_model.cloud.served_run import served_checkpoint
        from cats_model.inference import load_model
        from cats_model.serve.app import model_threads

        self.checkpoint = served_checkpoint(run)
        self.model = load_model(self.checkpoint, threads=model_threads())
        print(f"serving {self.checkpoint} ({self.model.info.backbone})", flush=True)

    @modal.asgi_app()
    def web(self):
        from cats_model.serve.app import create_app

        return create_app(self.model, options)
