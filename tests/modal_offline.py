"""Modal's network end, replaced for offline tests; the rest is the real Modal library running the real app.

- Running an app (`App.run`, and `modal run`'s `run_app`) checks that no function would be shipped pickled by
  value, then marks the app's functions hydrated, as Modal does while an app runs (runner.py::_run_app).
- `Function.spawn` runs the function's body via `.local()` at once and keeps its result (or exception) for
  `FunctionCall.from_id(id).get()`; `Function.remote` runs it via `.local()`. Both need the app running, as on
  Modal, and record each call (function, arguments, with_options) in `OfflineModal.calls`, and in the JSON-lines
  file named by $MODAL_OFFLINE_LOG (for processes started by a test).
- Any other way to Modal's service (making a client) fails loudly.

`python tests/modal_offline.py MODULE ARGS...` runs `python -m MODULE ARGS...` so replaced.
"""

import contextlib
import itertools
import json
import os
import runpy
import subprocess
import sys

import modal
import modal.cli.run
import modal.client
import modal.runner
from modal._utils.async_utils import synchronize_api, synchronizer

LOG_ENV = "MODAL_OFFLINE_LOG"


class OfflineCall:
    def __init__(self, object_id: str, result=None, error: BaseException | None = None):
        self.object_id, self._result, self._error = object_id, result, error

    def get(self, timeout: float | None = None):
        if self._error is not None:
            raise self._error
        return self._result


class OfflineModal:
    def __init__(self):
        self.calls: list[dict] = []
        self._results: dict[str, OfflineCall] = {}
        self._ids = itertools.count()

    def install(self, patch=setattr) -> "OfflineModal":
        """Replace the network end; `patch(owner, name, value)` (pytest's monkeypatch.setattr undoes it)."""
        offline = self

        @contextlib.asynccontextmanager
        async def run_app(app, **options):
            functions = list(app._local_state.functions.values())
            shipped = [f._source_info_.function_name for f in functions if f._source_info_.is_serialized()]
            assert not shipped, f"Modal would ship these functions pickled by value: {shipped}"
            for function in functions:
                function._is_hydrated = True
            offline._log({"function": "App.run", "detach": options.get("detach", False)})
            try:
                yield app
            finally:
                for function in functions:
                    function._unhydrate()

        def spawn(self, *args, **kwargs):
            call = OfflineCall(f"fc-offline-{next(offline._ids)}")
            offline._record(self, "spawn", args)
            try:
                call._result = self.local(*args, **kwargs)
            except Exception as err:  # as Modal reports a call that failed after its retries
                call._error = err
            offline._results[call.object_id] = call
            return call

        def remote(self, *args, **kwargs):
            offline._record(self, "remote", args)
            return self.local(*args, **kwargs)

        async def refuse(*args, **kwargs):
            raise AssertionError("the code under test reached Modal's service past the replaced end")

        patch(modal.runner, "_run_app", run_app)
        patch(modal.cli.run, "run_app", synchronize_api(run_app))
        patch(modal.Function, "spawn", spawn)
        patch(modal.Function, "remote", remote)
        patch(
            modal.FunctionCall,
            "from_id",
            staticmethod(lambda call_id, client=None: offline._results[call_id]),
        )
        patch(modal.client._Client, "from_env", classmethod(refuse))
        patch(modal.client._Client, "from_credentials", classmethod(refuse))
        return self

    def _record(self, function, how: str, args: tuple) -> None:
        inner = synchronizer._translate_in(function)
        base = inner._base_function or inner
        assert base._is_hydrated, f"{how} of {base._source_info_.function_name}: its app is not running"
        options = inner._options
        entry = {
            "function": base._source_info_.function_name,
            "how": how,
            "args": json.loads(json.dumps(args, default=str)),
            "gpu": options.resources.gpu_config.gpu_type if options.resources else None,
            "timeout": options.timeout_secs,
            "max_containers": options.max_containers,
        }
        self._log(entry)

    def _log(self, entry: dict) -> None:
        self.calls.append(entry)
        if os.environ.get(LOG_ENV):
            with open(os.environ[LOG_ENV], "a") as log:
                log.write(json.dumps(entry) + "\n")


def offline_run(tmp_path, *command: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`python -m COMMAND` in a process of its own, Modal's network end replaced, the outputs volume at
    tmp_path/volume; returns the process and the calls it made."""
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "CATS_MODEL_OUTPUT_DIR": str(tmp_path / "volume"),
        LOG_ENV: str(log),
        "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, __file__, *command], capture_output=True, text=True, timeout=900, env=env
    )
    calls = [json.loads(line) for line in open(log)] if log.exists() else []
    return result, calls


if __name__ == "__main__":
    OfflineModal().install()
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
