"""The Modal app: `modal run launch/modal_app.py -- trainer.max_epochs=20`; `modal serve launch/modal_app.py` for
TensorBoard.

Every setting comes from modal.yml and every dependency from pyproject.toml; the functions are thin shells
over cats_model.cloud.remote, whose bodies tests run offline with `.local()`.
"""

import shlex
import sys

import modal

from cats_model.cloud import entry, remote
from cats_model.cloud.calls import ModalCalls
from cats_model.cloud.image import project_image
from cats_model.cloud.settings import Call, load_settings
from cats_model.run_layout import call_run_name, fresh_run_name
from cats_model.system import in_container

settings = load_settings()
data_volume_name, data_mount = settings.volume("data")
outputs_volume_name, outputs_mount = settings.volume("outputs")
data_volume = modal.Volume.from_name(data_volume_name, create_if_missing=True)
outputs_volume = modal.Volume.from_name(outputs_volume_name, create_if_missing=True)
VOLUMES = {data_mount: data_volume, outputs_mount: outputs_volume}

image = project_image({remote.DATA_ENV: data_mount, remote.OUTPUT_ENV: outputs_mount})

app = modal.App(settings.app_name, image=image)

TRAIN_OPTIONS = dict(
    gpu=settings.train["gpu"],
    **settings.resources("train"),
    timeout=settings.train["timeout"],
    retries=modal.Retries(**settings.train["retries"]),
    single_use_containers=settings.train["single_use_containers"],
    volumes=VOLUMES,
)
PREPARE_DATA_OPTIONS = dict(
    **settings.resources("prepare_data"),
    timeout=settings.prepare_data["timeout"],
    retries=settings.prepare_data["retries"],
    volumes={data_mount: data_volume},
)
# The benchmark runs on the hardware training gets.
BENCH_OPTIONS = {key: TRAIN_OPTIONS[key] for key in ("gpu", "cpu", "memory", "env", "timeout", "volumes")}
# TensorBoard over the outputs volume (fetch and summary read it from the laptop: cats_model/cloud/outputs.py).
TOOL_OPTIONS = dict(
    **settings.resources("tools"),
    timeout=settings.tools["timeout"],
    volumes={outputs_mount: outputs_volume},
)
TENSORBOARD_OPTIONS = dict(**TOOL_OPTIONS, max_containers=settings.tensorboard["max_containers"])


def _commit(volume: modal.Volume):
    """Volume commits need the Modal service: only inside a container."""
    return volume.commit if in_container() else None


@app.function(**PREPARE_DATA_OPTIONS)
def prepare_data(configs: list[str]) -> dict:
    return remote.prepare_data(configs, commit=_commit(data_volume))


@app.function(**TRAIN_OPTIONS)
def train(config: str, overrides: list[str], run_name: str | None = None, call: dict | None = None) -> dict:
    """`config`: the run's composed config (cats_model.cloud.run_config); `overrides`: as typed, for its record."""
    # Without a name, the call's id names the run: a retry of this same call resumes the same folder.
    call_id = modal.current_function_call_id()
    run_name = run_name or call_run_name(call_id or fresh_run_name())
    result = remote.train(
        config,
        overrides,
        run_name,
        call or settings.call().to_dict(),
        commit=_commit(outputs_volume),
        commit_interval=settings.train["commit_interval"],
        continue_run=_continue_run,
        call_id=call_id,
    )
    _commit_data()
    return result


def _continue_run(config: str, overrides: list[str], run_name: str, call: Call) -> str:
    """Submitted from the container: the run goes on on Modal's side, whatever became of the caller."""
    _commit_data()
    return ModalCalls(sys.modules[__name__]).spawn(config, overrides, run_name, call)


def _commit_data() -> None:
    """ImageNet weights and the decoded-image cache made by a run stay for the next runs. Only a cache: a failed
    commit is a warning, never a raise, since a raise after the run's continuation was submitted would make Modal
    retry this call beside it (two containers writing one run)."""
    if commit_data := _commit(data_volume):
        try:
            commit_data()
        except Exception as err:
            print(
                f"warning: committing the data volume failed ({err}); later runs rebuild what it held",
                file=sys.stderr,
            )


@app.function(**BENCH_OPTIONS)
def bench(args: str = "") -> dict:
    """`modal run launch/modal_app.py::bench [--args "--root /data/oxford-iiit-pet"]`: the table streams back."""
    return remote.bench(shlex.split(args), commit=_commit(outputs_volume))


@app.function(**TENSORBOARD_OPTIONS)
@modal.concurrent(max_inputs=settings.tensorboard["concurrent_inputs"])
@modal.wsgi_app()
def tensorboard():
    """`modal serve launch/modal_app.py`: TensorBoard over every run on the outputs volume, at a URL."""
    return remote.tensorboard(reload=outputs_volume.reload if in_container() else None)


@app.local_entrypoint()
def main(*args: str):
    entry.main(args, ModalCalls(sys.modules[__name__]))
