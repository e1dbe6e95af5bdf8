"""`prepare_data` on the data volume: what it prepared once is left as it is by the next call, which then builds
no data module (no torch, no listing of every image); a cache that is gone, or data whose files may change, is
prepared again."""

import json
import subprocess
import sys

from helpers import FAST

from cats_model.cloud.prepared import record_file
from cats_model.cloud.remote import prepare_data
from cats_model.config import compose_train_config

# The next call's container: a fresh process.
NEXT_CALL = (
    "import json, sys; from cats_model.cloud.remote import prepare_data; "
    "result = prepare_data(json.loads(sys.argv[1]), None); "
    "print(json.dumps([result['prepared'], 'torch' in sys.modules]))"
)


def test_data_prepared_once_is_left_as_it_is_until_its_cache_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_DATA_DIR", str(tmp_path))
    assert prepare_data([FAST], None)["prepared"] == 1
    [record] = tmp_path.rglob(".cache/prepared-*.json")
    assert record == record_file(compose_train_config(FAST))

    again = subprocess.run(
        [sys.executable, "-c", NEXT_CALL, json.dumps([FAST])], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.splitlines()[-1]) == [0, False]  # nothing prepared, torch never imported
    assert "is prepared already" in again.stdout

    [cache] = tmp_path.rglob(".cache/*.npy")
    cache.unlink()
    assert prepare_data([FAST], None)["prepared"] == 1
    assert cache.is_file()


def test_data_whose_files_may_change_is_never_recorded(tmp_path):
    cfg = compose_train_config(["data=folder", f"data.root={tmp_path}"])
    assert record_file(cfg) is None
