"""One attempt of one input, as a Modal container runs it (started by tests/modal_service.py).

The app module is imported from its file by name (the folders on PYTHONPATH stand for the image's /root), the
function's raw body is called with the input's arguments, and the result or the exception is written for the
service. Nothing is ever unpickled as code: the arguments are data, the function is found by its name.
"""

import importlib
import json
import os
import pickle
import sys

import modal
from modal._runtime.execution_context import _set_current_context_ids
from modal._serialization import deserialize, serialize
from modal._utils.async_utils import synchronizer
from modal.running_app import running_app_from_layout
from modal_proto import api_pb2


def main() -> None:
    spec = json.loads(os.environ["OFFLINE_CONTAINER"])
    module = importlib.import_module(spec["module"])
    function = synchronizer._translate_in(getattr(module, spec["function"]))
    # The app's functions hydrated from its layout, as _container_entrypoint.py does: a container can call them.
    layout = api_pb2.AppLayout.FromString(open(spec["layout"], "rb").read())
    client = synchronizer._translate_in(modal.Client.from_env())
    app = synchronizer._translate_in(module.app)
    app._init_container(client, running_app_from_layout(spec["app_id"], layout))
    with open(spec["input"], "rb") as file:
        args, kwargs = deserialize(file.read(), None)
    _set_current_context_ids([spec["input_id"]], [spec["call_id"]], ["at-offline"])
    try:
        outcome = (True, serialize(function._raw_f(*args, **kwargs)))
    except Exception as err:
        outcome = (False, serialize(err))
    temporary = spec["output"] + ".tmp"
    with open(temporary, "wb") as file:
        pickle.dump(outcome, file)
    os.replace(temporary, spec["output"])
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
