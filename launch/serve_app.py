"""Serve a trained model on Modal: `modal deploy launch/serve_app.py` (`modal serve` while developing).

The same ASGI app as `python -m cats_model.serve`, in a Modal class that loads the best checkpoint of the run
named in modal.yml's `serve` section (or `CATS_MODEL_SERVE_RUN=NAME modal deploy ...`) from the outputs volume
once per container. `@modal.concurrent` hands the requests that arrive together to one container, where the
app's batcher runs them as one forward pass. (A class with a `@modal.batched` method may have no other
methods, so Modal's own batching would need a second container pool behind the web one.)
"""

import os

import modal

from cats_model.cloud import remote
from cats_model.cloud.image import project_image
from cats_model.cloud.settings import load_settings
from cats_model.errors import exit_on_user_error
from cats_model.serve.runs import checked_run

RUN_ENV = "CATS_MODEL_SERVE_RUN"
settings = load_settings()
serve = settings.serve
# Checked where `modal deploy` runs and carried into the container by the image. `latest` stays a lookup that each
# container makes as it starts (the run finished last by then): name a run to pin what a deployment serves.
with exit_on_user_error(exit_code=1):
    run = checked_run(os.environ.get(RUN_ENV) or str(serve["run"]))

outputs_volume_name, outputs_mount = settings.volume("outputs")
outputs_volume = modal.Volume.from_name(outputs_volume_name, create_if_missing=True)

image = project_image({remote.OUTPUT_ENV: outputs_mount, RUN_ENV: run})

app = modal.App(serve["app_name"], image=image)

SERVER_OPTIONS = dict(
    gpu=serve["gpu"],
    **settings.resources("serve"),
    scaledown_window=serve["scaledown_window"],
    timeout=serve["timeout"],
    volumes={outputs_mount: outputs_volume},
)


@app.cls(**SERVER_OPTIONS)
@modal.concurrent(max_inputs=serve["concurrency"])
class Server:
    @modal.enter()
    def load(self):
        from cats_model.inference import load_model
        from cats_model.serve.app import model_threads
        from cats_model.serve.runs import served_checkpoint

        self.checkpoint = served_checkpoint(run)
        self.model = load_model(self.checkpoint, threads=model_threads())
        print(f"serving {self.checkpoint} ({self.model.info.backbone})", flush=True)

    @modal.asgi_app()
    def web(self):
        from cats_model.serve.app import ServeOptions, create_app

        return create_app(self.model, ServeOptions(**serve["options"]))
