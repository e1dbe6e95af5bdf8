"""launch/modal_app.py against modal.yml and pyproject.toml, and its function bodies run offline with .local()."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import FAST

from cats_model.cloud import entry
from cats_model.cloud.settings import MODAL_YML, dependencies, split_torch
from cats_model.paths import PROJECT_ROOT

APP_FILE = PROJECT_ROOT / "launch" / "modal_app.py"
# The CPU variant of a remote run: the function picks trainer=gpu, the overrides move it to the CPU.
REMOTE_CPU = [o for o in FAST if not o.startswith("trainer=")] + ["trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def declared() -> dict:
    return yaml.safe_load(MODAL_YML.read_text())


@pytest.fixture
def mounts(tmp_path, monkeypatch, data_dir):
    """The volumes' mount points redirected to local folders."""
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "outputs"))
    return data_dir, tmp_path / "outputs"


def test_app_and_functions_match_modal_yml(modal_app, declared):
    assert modal_app.app.name == declared["app_name"] == "tiny-cats-model"
    volumes = {v["mount"]: v["name"] for v in declared["volumes"].values()}
    assert volumes == {"/data": "cats-model-data", "/outputs": "cats-model-outputs"}

    train = modal_app.train._spec_
    assert (train.gpus, train.cpu, train.memory) == tuple(
        declared["train"][k] for k in ("gpu", "cpu", "memory")
    )
    assert {mount: volume.name for mount, volume in train.volumes.items()} == volumes
    options = modal_app.TRAIN_OPTIONS
    assert options["timeout"] == declared["train"]["timeout"] == 3600
    assert options["single_use_containers"] is declared["train"]["single_use_containers"]
    retries = options["retries"]
    assert retries.max_retries == declared["train"]["retries"]["max_retries"]
    assert retries.initial_delay.total_seconds() == declared["train"]["retries"]["initial_delay"]
    assert retries.backoff_coefficient == declared["train"]["retries"]["backoff_coefficient"]

    bench = modal_app.bench._spec_  # measured on the hardware training gets
    assert (bench.gpus, bench.cpu, bench.memory) == (train.gpus, train.cpu, train.memory)
    assert {mount: volume.name for mount, volume in bench.volumes.items()} == volumes

    prepare = modal_app.prepare_data._spec_
    assert prepare.gpus is None
    assert (prepare.cpu, prepare.memory) == (
        declared["prepare_data"]["cpu"],
        declared["prepare_data"]["memory"],
    )
    assert {m: v.name for m, v in prepare.volumes.items()} == {"/data": "cats-model-data"}
    assert modal_app.PREPARE_DATA_OPTIONS["retries"] == declared["prepare_data"]["retries"]
    assert modal_app.PREPARE_DATA_OPTIONS["timeout"] == declared["prepare_data"]["timeout"]


def test_image_installs_exactly_the_pyproject_dependencies(modal_app):
    assert modal_app.torch_requirements + modal_app.other_requirements == sorted(
        dependencies(), key=lambda r: r not in modal_app.torch_requirements
    )
    assert [r.split(">")[0] for r in modal_app.torch_requirements] == ["torch", "torchvision"]
    assert split_torch(dependencies()) == (modal_app.torch_requirements, modal_app.other_requirements)


def test_no_modal_setting_is_written_twice():
    source = APP_FILE.read_text()
    for literal in (
        "tiny-cats-model",
        "cats-model-data",
        "cats-model-outputs",
        '"/data"',
        '"/outputs"',
        '"T4"',
        "3600",
    ):
        assert literal not in source, f"{literal} belongs in modal.yml only"


def test_modal_run_without_credentials_fails_fast_with_modals_message(tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no ~/.modal.toml, no MODAL_TOKEN_*
    result = subprocess.run(
        [sys.executable, "-m", "modal", "run", str(APP_FILE), "--", "trainer.max_epochs=20"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Token missing" in result.stdout + result.stderr


def test_run_name_and_overrides_are_separated():
    assert entry.split_run_name(("--", "run_name=r7", "trainer.max_epochs=20")) == (
        ["trainer.max_epochs=20"],
        "r7",
    )
    assert entry.split_run_name(("model=resnet34",)) == (["model=resnet34"], None)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", entry.fresh_run_name())


def test_bad_overrides_fail_before_any_modal_call(mounts, capsys):
    calls = []
    with pytest.raises(SystemExit) as exit_info:
        entry.main(
            ("model=resnet999",),
            prepare_data=lambda: calls.append("prepare"),
            train=lambda *a: calls.append("train"),
        )
    assert exit_info.value.code == 1 and calls == []
    assert "Could not find 'model/resnet999'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_local_writes_the_run_then_resumes_it(modal_app, mounts):
    _, outputs = mounts
    first = modal_app.train.local(REMOTE_CPU, "r1")
    run = outputs / "runs" / "r1"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "metrics.json").read_text())["epoch"] == 1
    assert first["run_name"] == "r1" and first["epoch"] == 1 and first["resumed_from"] is None

    second = modal_app.train.local([*REMOTE_CPU, "trainer.max_epochs=2"], "r1")
    assert second["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert second["epoch"] == 2 and second["global_step"] == 2 * first["global_step"]


@pytest.mark.slow
@pytest.mark.slow
def test_bench_local_writes_its_table_to_the_outputs_volume(modal_app, mounts):
    results = modal_app.bench.local(
        "--images-per-class 8 --image-size 48 --batch-size 8 --workers 0 --epochs 1 --train-size 32 --train-steps 6"
    )
    written = list((mounts[1] / "bench").glob("*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == json.loads(json.dumps(results))
    assert results["machine"]["image_size"] == 48  # the arguments reached the benchmark


def test_a_user_error_is_returned_not_raised_so_modal_never_retries_it(modal_app, mounts, tmp_path):
    cpu = ["model=mobilenet_v3_small", "model.pretrained=false", "trainer.accelerator=cpu"]
    missing = modal_app.train.local([*cpu, "data=cat_breeds", f"data.root={tmp_path}/none"], "bad")
    assert missing["error"].startswith("no Oxford-IIIT Pet dataset at")
    typo = modal_app.train.local([*cpu, "trainer.max_epoch=3"], "bad")
    assert "trainer.max_epoch" in typo["error"]
    assert modal_app.train.local(cpu, "../escape")["error"].startswith("run name '../escape'")


@pytest.mark.slow
def test_entrypoint_runs_the_same_path_offline(modal_app, mounts, capsys):
    calls = []

    def prepare():
        calls.append("prepare")

    result = entry.main(
        ("--", *REMOTE_CPU, "run_name=cli"), prepare_data=prepare, train=modal_app.train.local
    )
    assert calls == []  # synthetic data: nothing to download
    assert result["run_name"] == "cli" and result["epoch"] == 1
    out = capsys.readouterr().out
    assert (
        f"modal volume get cats-model-outputs runs/cli/checkpoints/{result['best_model_path'].rsplit('/', 1)[1]} ."
        in out
    )
    assert "modal run launch/modal_app.py -- run_name=cli" in out


def test_only_runs_on_oxford_data_prepare_the_data_volume():
    from cats_model.config import compose_train_config

    def needs(*overrides):
        return entry.needs_oxford_download(compose_train_config(list(overrides)))

    assert needs() and needs("data=cat_vs_other")
    assert not needs("data=synthetic") and not needs("data=folder", "data.root=/photos")
