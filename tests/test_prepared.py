"""`prepare_data` on the data volume: what it prepared once is left as it is by the next call, which then builds
no data module (no torch, no listing of every image); a cache that is gone or was never written, or data whose
files may change, is prepared again."""

import json
import subprocess
import sys

from helpers import FAST, modal_run

from cats_model.cloud.prepared import record_file
from cats_model.cloud.remote import prepare_data
from cats_model.config import compose_train_config
from cats_model.data.cache import DecodedCache

# The next call's container: a fresh process.
NEXT_CALL = (
    "import json, sys; from cats_model.cloud.remote import prepare_data; "
    "result = prepare_data(json.loads(sys.argv[1]), None); "
    "print(json.dumps([result['prepared'], 'torch' in sys.modules]))"
)


# The config a Modal run sends for these overrides.
[CONFIG] = modal_run(FAST)[:1]


def test_data_prepared_once_is_left_as_it_is_until_its_cache_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_DATA_DIR", str(tmp_path))
    assert prepare_data([CONFIG], None)["prepared"] == 1
    [record] = tmp_path.rglob(".cache/prepared-*.json")
    assert record == record_file(compose_train_config(FAST))

    again = subprocess.run(
        [sys.executable, "-c", NEXT_CALL, json.dumps([CONFIG])], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.splitlines()[-1]) == [0, False]  # nothing prepared, torch never imported
    assert "is prepared already" in again.stdout

    for name in json.loads(record.read_text())["cache_files"]:  # the array, or the list of unreadable files
        (record.parent / name).unlink()
        assert prepare_data([CONFIG], None)["prepared"] == 1
        assert (record.parent / name).is_file()


def test_a_cache_that_could_not_be_written_is_not_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_DATA_DIR", str(tmp_path))
    with monkeypatch.context() as disk:
        disk.setattr(
            DecodedCache, "build", lambda self, unreadable: (_ for _ in ()).throw(OSError(28, "full"))
        )
        assert (
            prepare_data([CONFIG], None)["prepared"] == 1
        )  # the JPEG pipeline instead: the run still trains
    assert not list(tmp_path.rglob(".cache/prepared-*.json"))
    assert prepare_data([CONFIG], None)["prepared"] == 1  # the disk has room again: the cache is built now
    assert list(tmp_path.rglob(".cache/prepared-*.json"))


def test_data_whose_files_may_change_is_never_recorded(tmp_path):
    for overrides in (
        ["data=folder", f"data.root={tmp_path}"],  # one's own photos
        [*FAST, f"data.negatives={tmp_path}"],  # a folder of images of no cat beside the synthetic data
        ["data=cat_breeds", f"data.root={tmp_path}"],  # Oxford's layout in a folder of one's own
    ):
        assert record_file(compose_train_config(overrides)) is None, overrides
    assert record_file(compose_train_config(["data=cat_breeds"])) is not None  # Oxford-IIIT Pet as downloaded
