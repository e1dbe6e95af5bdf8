"""launch/modal_app.py against modal.yml and pyproject.toml, and its function bodies run offline with .local()."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml
from helpers import APP_FILE, REMOTE_CPU, like_a_process, modal_run
from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from cats_model.cloud import entry
from cats_model.cloud.calls import ModalCalls
from cats_model.cloud.overrides import split_launch, split_run_name
from cats_model.cloud.prepared import needs_oxford_download
from cats_model.cloud.remote import training_command
from cats_model.cloud.run_config import compose_run, read_config
from cats_model.cloud.settings import MODAL_YML, load_settings
from cats_model.config import compose_train_config
from cats_model.errors import UserError
from cats_model.paths import CONFIG_DIR, PROJECT_ROOT
from cats_model.run_layout import fresh_run_name

TESTS_DIR = PROJECT_ROOT / "tests"


@pytest.fixture(scope="module")
def declared() -> dict:
    return yaml.safe_load(MODAL_YML.read_text())


@pytest.fixture
def mounts(tmp_path, monkeypatch, data_dir):
    """The volumes' mount points redirected to local folders."""
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "outputs"))
    return data_dir, tmp_path / "outputs"


@pytest.fixture
def tests_importable(monkeypatch):
    """Training processes can load the test callbacks (tests/ on their PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))


def call(**fields) -> dict:
    return load_settings().call(**fields).to_dict()


def test_app_and_functions_match_modal_yml(modal_app, declared):
    assert modal_app.app.name == declared["app_name"] == "tiny-cats-model"
    volumes = {v["mount"]: v["name"] for v in declared["volumes"].values()}
    assert volumes == {"/data": "cats-model-data", "/outputs": "cats-model-outputs"}

    train = modal_app.train._spec_
    assert (train.gpus, list(train.cpu), list(train.memory)) == tuple(
        declared["train"][k] for k in ("gpu", "cpu", "memory")
    )  # (request, limit)
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
    assert (list(prepare.cpu), list(prepare.memory)) == (
        declared["prepare_data"]["cpu"],
        declared["prepare_data"]["memory"],
    )
    assert {m: v.name for m, v in prepare.volumes.items()} == {"/data": "cats-model-data"}
    assert modal_app.PREPARE_DATA_OPTIONS["retries"] == declared["prepare_data"]["retries"]
    assert modal_app.PREPARE_DATA_OPTIONS["timeout"] == declared["prepare_data"]["timeout"]

    for tool in (modal_app.tensorboard,):
        spec = tool._spec_
        assert spec.gpus is None and (list(spec.cpu), list(spec.memory)) == (
            declared["tools"]["cpu"],
            declared["tools"]["memory"],
        )
        assert {m: v.name for m, v in spec.volumes.items()} == {"/outputs": "cats-model-outputs"}
    assert modal_app.TOOL_OPTIONS["timeout"] == declared["tools"]["timeout"]
    assert modal_app.TENSORBOARD_OPTIONS["max_containers"] == declared["tensorboard"]["max_containers"]


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


def test_run_name_gpu_and_timeout_are_separated_from_the_training_overrides():
    assert split_run_name(("--", "run_name=r7", "trainer.max_epochs=20")) == (["trainer.max_epochs=20"], "r7")
    assert split_run_name(("model=resnet34",)) == (["model=resnet34"], None)
    assert split_launch(["gpu=A100", "trainer.max_epochs=3", "timeout=7200"]) == (
        ["trainer.max_epochs=3"],
        {"gpu": "A100", "timeout": "7200"},
    )
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", fresh_run_name())


def test_a_call_takes_its_gpu_and_timeout_from_the_overrides_or_modal_yml(declared):
    settings = load_settings()
    default = settings.call()
    assert (default.gpu, default.timeout) == (declared["train"]["gpu"], declared["train"]["timeout"])
    assert settings.call("H100:8").gpu_count == 8 and settings.call("A10G:4").gpu_count == 4
    chosen = settings.call("a10g:2", "7200", max_containers=4)
    assert chosen.options() == {"gpu": "a10g:2", "timeout": 7200, "max_containers": 4}
    assert chosen.gpu_count == 2
    prices = declared["prices"]
    assert settings.hourly_price("A100") == pytest.approx(
        prices["gpu"]["A100"] + prices["cpu_core"] * 8 + prices["memory_gib"] * 32
    )
    assert settings.hourly_price("A10G:2") - settings.hourly_price("A10G") == pytest.approx(
        prices["gpu"]["A10G"]
    )
    for gpu, timeout, message in (
        ("A1OO", None, "gpu=A1OO is not a GPU type of modal.yml"),
        ("T4:0", None, "gpu=T4:0 is not a GPU type"),
        ("a10g:5", None, "gpu=a10g:5 asks for 5 a10g GPUs in one container: Modal gives at most 4"),
        ("H100:9", None, "at most 8 \\(max_gpus in modal.yml\\)"),
        (None, "10", "timeout=10 must be a whole number of seconds above"),
        (None, "90000", "at most 86400"),
        (None, "1h", "timeout=1h must be"),
    ):
        with pytest.raises(UserError, match=message):
            settings.call(gpu, timeout)


def test_a_modal_run_is_composed_once_here_as_one_run_with_the_containers_presets(tmp_path, monkeypatch):
    # An experiment of one's own (in a folder the container never sees) that sets the training process's
    # environment, as NCCL's variables are set; one more variable typed, and one copied from this machine.
    mine = tmp_path / "configs" / "experiment" / "mine.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# @package _global_\nhydra:\n  job:\n    env_set:\n      CATS_MODEL_TEST_FLAG: 'on'\n")
    monkeypatch.setenv("CATS_MODEL_TEST_HERE", "from here")
    trial = [
        "optimizer.lr=0.001",
        "hparams_search=optuna_lr",
        "hydra.sweeper.n_trials=2",
        "~hydra.sweeper.params.model",
    ]
    launch = ["hydra/launcher=modal", "hydra.launcher.backend=local", "gpu=T4:2", "timeout=900"]
    hydra = [
        f"hydra.searchpath=[file://{mine.parent.parent}]", "experiment=mine", "hydra.verbose=true",
        "+hydra.job.env_set.CATS_MODEL_TEST_TYPED=typed", "hydra.job.env_copy=[CATS_MODEL_TEST_HERE]",
    ]  # fmt: skip
    config, call = compose_run([*trial, *launch, *hydra], load_settings(), sweep="s", job=3)
    cfg = read_config(config)
    assert cfg.optimizer.lr == 0.001
    assert (call.gpu, call.timeout, call.sweep, call.job) == ("T4:2", 900, "s", 3)
    # The container's presets, composed in: DDP over the call's two GPUs, TensorBoard beside the CSV log.
    assert cfg.trainer.strategy == "ddp" and list(cfg.logger) == ["csv", "tensorboard"]
    assert "${paths.data_dir}" in config  # paths resolve in the container, against its mounts
    # Of Hydra's own node, only the settings the training process takes cross: no sweep, no run folder.
    environment = {
        "CATS_MODEL_TEST_FLAG": "on",
        "CATS_MODEL_TEST_TYPED": "typed",
        "CATS_MODEL_TEST_HERE": "from here",
    }
    assert cfg.hydra == {"job": {"env_set": environment, "chdir": False}, "verbose": True}
    chosen = read_config(compose_run(["trainer=cpu", "logger=csv"], load_settings())[0])
    assert chosen.trainer.accelerator == "cpu" and list(chosen.logger) == ["csv"]

    # The training process as a container starts it (`python -m cats_model.train ARGUMENTS`, @hydra.main): one run
    # on the config sent as its primary config, its environment set, in the folder the container gives it, which
    # records what was sent.
    monkeypatch.delenv("CATS_MODEL_TEST_HERE")  # not in the container: its value came in the config
    command = training_command(config, "r1", tmp_path / "r1", load_settings().call(), time.time(), tmp_path)
    assert command[:3] == [sys.executable, "-m", "cats_model.train"]
    arguments = command[3:]
    parser = get_args_parser()
    seen = []
    with like_a_process(["cats_model/train.py", *arguments], dict.fromkeys(environment)):
        _run_hydra(
            args=parser.parse_args(arguments), args_parser=parser, config_path=str(CONFIG_DIR), config_name="train",
            task_function=lambda _: seen.append((HydraConfig.get().mode, {k: os.environ.get(k) for k in environment})),
        )  # fmt: skip
    assert seen == [(RunMode.RUN, environment)]
    recorded = OmegaConf.load(tmp_path / "r1" / ".hydra" / "config.yaml")
    del cfg.hydra, recorded.callbacks.stop_before_deadline  # the container's own: its call's deadline
    assert recorded == OmegaConf.merge(cfg, {"run_name": "r1"})


def test_bad_overrides_fail_before_any_modal_call(modal_client, modal_app, mounts, capsys):
    for args, message in (
        (("model=resnet999",), "Could not find 'model/resnet999'"),
        (("gpu=A1OO",), "gpu=A1OO is not a GPU type"),
        (("gpu=T4:16",), "gpu=T4:16 asks for 16 T4 GPUs in one container: Modal gives at most 8"),
        (("paths.output_dir=/",), "paths.output_dir=/ cannot be set for a Modal run"),
        (("hydra.run.dir=/tmp/y",), "hydra.run.dir=/tmp/y cannot be set for a Modal run"),
        (("+run_tag=${hydra:job.override_dirname}",), "reads Hydra's own config, which differs in"),
        (
            ("hydra/job_logging=disabled",),
            "is a setting of Hydra's own that a Modal run's training process does not",
        ),
        (("data.batch_size=0",), "data.batch_size=0 is not a valid value: expected an integer >= 2"),
        (("optimizer._target_=torch.optim.Adamw",), "unknown optimizer 'torch.optim.Adamw'"),
        (("+trainer.max_epoch=3",), "trainer.max_epoch is not a setting of Lightning's Trainer"),
        (("model=default",), "model.backbone is not set"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            entry.main(args, ModalCalls(modal_app))
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert modal_client.requests == []  # not even an app was created


def test_deterministic_errors_are_returned_not_raised_so_modal_never_retries_them(
    modal_app, mounts, tmp_path
):
    cpu = ["model=mobilenet_v3_small", "model.pretrained=false", "trainer.accelerator=cpu"]
    missing = modal_app.train.local(
        *modal_run([*cpu, "data=cat_breeds", f"data.root={tmp_path}/none"]), "missing", call()
    )
    assert missing["error"].startswith("no Oxford-IIIT Pet dataset at")
    assert modal_app.train.local(*modal_run(cpu), "../escape", call())["error"].startswith(
        "run name '../escape'"
    )
    assert modal_app.train.local(*modal_run(cpu), "abc\n", call())["error"].startswith("run name 'abc\\n'")
    assert not (mounts[1] / "escape").exists()  # refused before anything ran
    assert json.loads((mounts[1] / "runs" / "missing" / "launch.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_the_training_process_says_why_it_failed_and_only_crashes_raise(
    modal_app, mounts, tests_importable, tmp_path
):
    # CUDA out of memory recurs on every attempt: one line naming the batch size, never a retried crash. (The
    # training process's other user errors, one line each, are tests/test_sweep_report.py's jobs 2 and 3, which run
    # this same body.)
    oom = [*REMOTE_CPU, "+callbacks.oom._target_=oom_fault.OutOfMemoryAtFirstBatch"]
    result = modal_app.train.local(*modal_run(oom), "oom", call())
    assert result["error"].startswith("CUDA out of memory on ")
    assert "data.batch_size=16: try a smaller batch, e.g. data.batch_size=8" in result["error"]

    # A killed training process is a crash: raised, so that Modal retries the call (which resumes the run).
    kill = [
        *REMOTE_CPU, "+callbacks.fault._target_=faults.KillAt", "+callbacks.fault.point=train_batch",
        "+callbacks.fault.epoch=0", f"+callbacks.fault.marker={tmp_path / 'killed'}",
    ]  # fmt: skip
    killed = (
        r"training of run crash failed: killed by the system \(SIGKILL\): out of memory\?; its last line: "
    )
    with pytest.raises(RuntimeError, match=killed) as crashed:
        modal_app.train.local(*modal_run(kill), "crash", call())
    # the line the run wrote last, in its train.log (stderr holds only Lightning's early lines)
    last = (mounts[1] / "runs" / "crash" / "train.log").read_text().strip().splitlines()[-1]
    assert str(crashed.value).endswith(last)
    assert json.loads((mounts[1] / "runs" / "crash" / "launch.json").read_text())["status"] == "crashed"
    # The retry finishes the run.
    assert modal_app.train.local(*modal_run(kill), "crash", call())["epoch"] == 1


@pytest.mark.slow
def test_ddp_in_a_container_starts_its_second_rank_on_the_config_sent(modal_app, mounts, capfd):
    # Lightning's DDP starts rank 1 with the training process's own arguments (the sent config's folder among them)
    # into the same run folder, which only rank 0 holds (cats_model.run_folder.hold): it is not stopped by the lock.
    ddp = [
        *REMOTE_CPU,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",
    ]
    result = modal_app.train.local(*modal_run(ddp), "ddp", call())
    assert result["epoch"] == 1 and "error" not in result
    said = "".join(capfd.readouterr())
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in said


@pytest.mark.slow
def test_a_run_stops_at_the_ceiling_of_modal_yml(modal_app, mounts, declared):
    ceiling = declared["train"]["max_hours"] * 3600
    spent = call(timeout=declared["train"]["stop_before_timeout"] + 1)
    spent["spent_s"] = (
        ceiling  # earlier calls used it all: this one stops at its deadline, and nothing follows
    )
    result = modal_app.train.local(*modal_run(REMOTE_CPU), "ceiling", spent)
    assert "stopped unfinished after" in result["error"] and "train.max_hours" in result["error"]
    assert "continued_in" not in result
    assert json.loads((mounts[1] / "runs" / "ceiling" / "launch.json").read_text())["status"] == "stopped"
    assert (mounts[1] / "runs" / "ceiling" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_bench_local_writes_its_table_to_the_outputs_volume(modal_app, mounts):
    results = modal_app.bench.local(
        "--images-per-class 4 --image-size 48 --batch-size 8 --workers 0 --epochs 1 --train-size 16 --train-steps 4"
    )
    written = list((mounts[1] / "bench").glob("*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == json.loads(json.dumps(results))
    assert results["machine"]["image_size"] == 48  # the arguments reached the benchmark


def test_only_runs_on_oxford_data_prepare_the_data_volume():
    def needs(*overrides):
        return needs_oxford_download(compose_train_config(list(overrides)))

    assert needs() and needs("data=cat_vs_other")
    assert not needs("data=synthetic") and not needs("data=folder", "data.root=/photos")


LOADED_FUNCTIONS = """
import json, sys
{load}
print(json.dumps({{name: f._source_info_.is_serialized() for name, f in module.app.registered_functions.items()}}))
"""


@pytest.mark.parametrize(
    "load",
    [
        # `modal run launch/modal_app.py`: Modal's CLI loads the file (modal/cli/import_refs.py).
        "from modal.cli.import_refs import ImportRef, import_file_or_module\n"
        f"module = import_file_or_module(ImportRef({str(APP_FILE)!r}, use_module_mode=False))",
        # `python -m cats_model.train -m hydra/launcher=modal`: the launcher loads it.
        "from cats_model.cloud.calls import load_modal_app\nmodule = load_modal_app()",
    ],
    ids=["modal-cli", "launcher"],
)
def test_no_function_is_shipped_pickled_by_value_on_any_load_path(modal_app, load):
    by_pytest = {
        name: f._source_info_.is_serialized() for name, f in modal_app.app.registered_functions.items()
    }
    assert set(by_pytest) == {"prepare_data", "train", "bench", "tensorboard"}
    result = subprocess.run(
        [sys.executable, "-c", LOADED_FUNCTIONS.format(load=load)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded == by_pytest and not any(loaded.values())


def test_the_commit_watcher_survives_a_failed_commit_and_a_failed_final_commit_raises(tmp_path):
    from cats_model.cloud.remote import CheckpointCommitter

    commits = []

    def flaky_commit():
        commits.append("tried")
        if len(commits) == 1:
            raise OSError("the volume refused the commit")

    folder = tmp_path / "checkpoints"
    with CheckpointCommitter(folder, flaky_commit, interval=0.05):
        folder.mkdir()
        (folder / "last.ckpt").write_bytes(b"epoch 1")
        for _ in range(200):  # the watcher commits the new file, fails once, and tries again
            if len(commits) >= 2:
                break
            time.sleep(0.05)
    assert len(commits) >= 3  # the failure, the retry, and the final commit


def test_a_new_checkpoint_is_committed_at_once_and_the_next_after_the_interval(tmp_path, monkeypatch):
    from cats_model.cloud.remote import CheckpointCommitter

    monkeypatch.setattr(CheckpointCommitter, "CHECK_S", 0.05)
    commits = []
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    committer = CheckpointCommitter(
        folder, lambda: commits.append(sorted(p.name for p in folder.iterdir())), 3600
    )
    committer._thread.start()
    (folder / "last.ckpt").write_bytes(b"epoch 0")
    for _ in range(600):  # the first change: committed at the next look, not an interval later
        if commits:
            break
        time.sleep(0.05)
    (folder / "best.ckpt").write_bytes(b"epoch 1")  # within the interval: left to the next commit
    time.sleep(0.5)  # ten looks
    committer._stop.set()
    committer._thread.join()
    assert commits == [["last.ckpt"]]


def test_a_commit_that_keeps_failing_the_same_way_is_one_warning(tmp_path, capsys):
    from cats_model.cloud.remote import CheckpointCommitter

    commits = []

    def blocked_commit():
        commits.append("tried")
        raise RuntimeError("there are open files preventing the operation: train.log")

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    committer = CheckpointCommitter(folder, blocked_commit, interval=0.02)
    committer._thread.start()
    for epoch in range(4):  # a new checkpoint each time, each commit refused alike
        (folder / "last.ckpt").write_bytes(b"epoch %d" % epoch)
        while len(commits) <= epoch:
            time.sleep(0.01)
    committer._stop.set()
    committer._thread.join()
    assert capsys.readouterr().err.count("warning: committing the outputs volume failed") == 1

    def broken_commit():
        raise OSError("the volume is gone")

    with pytest.raises(
        RuntimeError, match="could not be committed to the outputs volume: the volume is gone"
    ):
        with CheckpointCommitter(folder, broken_commit, interval=60):
            pass


def test_the_readme_sample_cost_follows_from_modal_yml():
    readme = (PROJECT_ROOT / "README.md").read_text()
    sample = entry.report({"run_name": "x", "container_s": 512, "calls": 1, "gpu": "T4"})
    cost_line = sample.splitlines()[0].split("test/acc None, ")[1]  # "512 s in 1 call, about $... on T4"
    assert cost_line in readme


def test_a_failed_data_commit_is_a_warning_so_a_continued_call_is_never_retried(
    modal_app, monkeypatch, capsys
):
    """The data volume holds caches; the train function commits it after the run's continuation may have been
    submitted, where a raise would make Modal retry the call beside its continuation."""

    def conflict():
        raise RuntimeError("Conflict: the volume changed")

    monkeypatch.setattr(modal_app, "in_container", lambda: True)
    monkeypatch.setattr(modal_app.data_volume, "commit", conflict)
    modal_app._commit_data()
    assert (
        "warning: committing the data volume failed (Conflict: the volume changed)" in capsys.readouterr().err
    )


def test_a_training_stopped_by_sigterm_is_a_preemption_that_modal_retries(tmp_path):
    """Killed by SIGTERM, or exiting 128+15 from a handler: resumable, so raised (Modal retries), never 'done'."""
    from cats_model.cloud.remote import SIGTERM_EXITS, _outcome
    from cats_model.cloud.settings import Call

    for code in SIGTERM_EXITS:
        status, result = _outcome(code, "", tmp_path, Call(**call()), 1.0)
        assert status == "preempted" and "stopped by SIGTERM" in result["error"]
    assert _outcome(-9, "", tmp_path, Call(**call()), 1.0)[0] == "crashed"  # SIGKILL without the OOM killer
    assert _outcome(-9, "", tmp_path, Call(**call()), 1.0, out_of_memory=True)[0] == "failed"
