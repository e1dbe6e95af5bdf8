"""Making the calls of launch/modal_app.py: on Modal, or with the same function bodies on this machine.

`ModalCalls` is the only code that talks to Modal's service. `LocalCalls` runs the same bodies in processes of
this machine, the mounts pointed at local folders: a sweep without a Modal account (hydra.launcher.backend=local).
Both submit a train call and return its id at once, then follow it (and the calls that continue its run) to the
end, so that every caller (a single run, a sweep) handles runs the same way.
"""

import contextlib
import importlib.util
import json
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from cats_model.cloud.remote import DATA_ENV, OUTPUT_ENV
from cats_model.cloud.settings import Call, load_settings
from cats_model.errors import UserError
from cats_model.fresh_process import in_fresh_process
from cats_model.noise import mounts_redirected
from cats_model.paths import PROJECT_ROOT
from cats_model.run_layout import RECORD_FILE, VOLUME_ROOT, run_dir
from cats_model.system import cpu_share_env

LAUNCH_DIR = PROJECT_ROOT / "launch"
# Modal's own longest server-side wait per poll; tests shorten it to see many polls of one call.
RESULT_POLL_S = float(os.environ.get("CATS_MODEL_RESULT_POLL_S", 55))


def load_modal_app(name: str = "modal_app"):
    """launch/<name>.py as Modal's CLI loads it (modal/cli/import_refs.py::import_file_or_module), under the name
    the CLI gives it and the container uses: registered in sys.modules before it runs. Unregistered, Modal cannot
    find the functions' module and ships them pickled by value (`_source_info_.is_serialized()`), which the
    container cannot load."""
    if name in sys.modules:  # `modal run launch/<name>.py` loaded it already, or an earlier call
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def deployed_app() -> SimpleNamespace:
    """The deployed app's functions and outputs volume, looked up by name (`modal deploy launch/modal_app.py`):
    calls submitted to it belong to no client, so a closed terminal stops none of them."""
    import modal

    settings = load_settings()
    functions = {
        name: modal.Function.from_name(settings.app_name, name) for name in ("train", "prepare_data")
    }
    return SimpleNamespace(
        app=None, outputs_volume=modal.Volume.from_name(settings.volume("outputs")[0]), **functions
    )


def follow(calls, call_id: str) -> dict:
    """The result of a train call, through the calls that continue its run after a timeout."""
    result = calls.result(call_id)
    while "continued_in" in result:
        print(
            f"run {result['run_name']}: call {result['calls']} stopped before its timeout, "
            f"call {result['calls'] + 1} continues it",
            flush=True,
        )
        result = calls.result(result["continued_in"])
    return result


class ModalCalls:
    """Calls on Modal. Train calls are spawned: an input submitted with `spawn` is retried by Modal itself, while
    those of a blocking `.remote()` are retried by the calling client (modal/_functions.py::_Invocation.run_function
    sends FunctionRetryInputs for SYNC inputs only), so a closed terminal would end them."""

    def __init__(self, modal_app, detach: bool = False, without_modal: str = ""):
        """`without_modal`: what the user can do instead when Modal is not set up here (said after the fix)."""
        self.modal_app, self.detach, self.without_modal = modal_app, detach, without_modal

    @contextlib.contextmanager
    def running(self):
        """The app running: as it is inside `modal run`, started here, or deployed (looked up by name)."""
        import modal

        if self.modal_app.app is None:
            try:
                yield
            except modal.exception.NotFoundError as err:
                raise UserError(
                    f"{err}: deploy the app once with `modal deploy launch/modal_app.py` (and again after a change)"
                ) from err
            return

        # Modal hydrates an app's functions while it runs (runner.py::_run_app) and unhydrates them after.
        if self.modal_app.train._is_hydrated:
            yield
            return
        try:
            with modal.enable_output(), self.modal_app.app.run(detach=self.detach):
                yield
        except modal.exception.AuthError as err:
            instead = f", or {self.without_modal}" if self.without_modal else ""
            raise UserError(f"Modal is not authenticated: run `modal token new` once{instead}") from err

    def prepare_data(self, configs: list[str]) -> dict:
        return self.modal_app.prepare_data.remote(configs)

    def submit(self, config: str, overrides: list[str], run_name: str, call: Call) -> str:
        """The call that trains `run_name`: the one already training it, if any, so that a run submitted again
        while it runs (a sweep or `run_name=NAME` run again) is followed instead of trained twice at once."""
        if running := self.running_call(run_name):
            print(
                f"run {run_name} is still training on Modal in call {running}: following that call",
                flush=True,
            )
            return running
        return self.spawn(config, overrides, run_name, call)

    def spawn(self, config: str, overrides: list[str], run_name: str, call: Call) -> str:
        # with_options: this call's GPU, timeout and, in a sweep, max_containers (modal/_functions.py::with_options).
        train = self.modal_app.train.with_options(**call.options())
        return train.spawn(config, overrides, run_name, call.to_dict()).object_id

    def running_call(self, run_name: str) -> str | None:
        """The id of the call training `run_name` now, from the run's record on the outputs volume (read from here,
        no container) and the call's state on Modal."""
        import modal

        try:
            data = b"".join(
                self.modal_app.outputs_volume.read_file(str(run_dir(VOLUME_ROOT, run_name) / RECORD_FILE))
            )
            record = json.loads(data)
        except (FileNotFoundError, modal.exception.NotFoundError, ValueError):
            return None
        if record.get("status") != "running" or not record.get("call_id"):
            return None
        try:
            modal.FunctionCall.from_id(record["call_id"]).get(timeout=0)
        except TimeoutError:  # the builtin: a poll that ended with the call still running
            return record["call_id"]
        except Exception:  # it ended without finishing the run (crashed, expired, stopped): train it anew
            return None
        return None

    def result(self, call_id: str) -> dict:
        """Waits for the call in polls of RESULT_POLL_S: waiting with no timeout, Modal would never notice a result
        that expired (modal/_functions.py::poll_function tells expiry apart only when a poll times out).

        modal 1.6.4 raises Python's builtin TimeoutError for a poll that ends while the call runs; modal's own
        exception.TimeoutError (no subclass of it) comes with FunctionTimeoutError, a call that timed out on its
        last attempt: that one has ended, like every other exception here."""
        import modal

        call = modal.FunctionCall.from_id(call_id)
        while True:
            try:
                return call.get(timeout=RESULT_POLL_S)
            except modal.exception.OutputExpiredError as err:
                raise UserError(
                    f"the result of call {call_id} has expired on Modal: what the run wrote is on the outputs "
                    "volume (python -m cats_model.cloud fetch RUN, or summary SWEEP)"
                ) from err
            except modal.exception.FunctionTimeoutError as err:
                raise UserError(
                    f"call {call_id} reached its Modal timeout on every attempt ({err}); what it saved is on the "
                    "outputs volume: run it again with the same run_name to resume, or raise timeout="
                ) from err
            except TimeoutError:  # the builtin: this poll ended while the call still runs
                continue


class LocalCalls:
    """The same calls on this machine: each body runs via `.local()` in a fresh process, `max_parallel` at a time,
    with the data and outputs mounts pointed at local folders (one data folder for all, as the volume is)."""

    def __init__(self, max_parallel: int, data_dir: Path, output_dir: Path):
        self.max_parallel = max_parallel
        # Each job its share of this machine's cores, as each container has its own CPU request: its threads and
        # loader workers are sized to it (more threads than cores only spin: four jobs of two threads each on two
        # cores used 2.7 times the CPU time of one job in turn).
        self.env = {DATA_ENV: str(data_dir), OUTPUT_ENV: str(output_dir), **cpu_share_env(max_parallel)}
        self._pool: ThreadPoolExecutor | None = None
        self._calls: dict[str, Future] = {}

    @contextlib.contextmanager
    def running(self):
        with ThreadPoolExecutor(self.max_parallel) as self._pool:
            yield

    def prepare_data(self, configs: list[str]) -> dict:
        return in_fresh_process(call_locally, "prepare_data", (configs,), self.env)

    def submit(self, config: str, overrides: list[str], run_name: str, call: Call) -> str:
        # No Modal timeout here: a run never stops early.
        call = replace(call, timeout=None, max_containers=None)
        call_id = f"local-{len(self._calls)}"
        self._calls[call_id] = self._pool.submit(
            in_fresh_process, call_locally, "train", (config, overrides, run_name, call.to_dict()), self.env
        )
        return call_id

    def result(self, call_id: str) -> dict:
        return self._calls[call_id].result()


def call_locally(function: str, args: tuple, env: dict[str, str]):
    """In its own process: the Modal function's body, as a container would run it, with the mounts (and the
    training process it starts) set by `env`."""
    os.environ.update(env)
    with mounts_redirected():
        return getattr(load_modal_app(), function).local(*args)
