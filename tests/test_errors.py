"""Mistakes a user makes end in one line on stderr and a non-zero exit, not a traceback."""

import fcntl
import re
import socket
import urllib.request

import pytest
from helpers import assert_one_line_error, fast_without, run_cli, run_cli_in_process
from omegaconf import OmegaConf

from cats_model.config import compose_train_config
from cats_model.errors import UserError, user_error_in
from cats_model.paths import CONFIG_DIR
from cats_model.run_folder import remove_if_empty, removed_if_failed_empty
from cats_model.system import available_cpus
from cats_model.train import train
from cats_model.validation import RANGES

SMOKE = ["debug=smoke", "callbacks.progress_bar=null"]
FAST_ANY_DATA = fast_without("data=", "data.synthetic")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_dataset_names_the_download_command(tmp_path):
    result = run_cli_in_process(
        "debug=default", f"data.root={tmp_path}/pets", f"hydra.run.dir={tmp_path}/run"
    )
    assert_one_line_error(
        result, "error: no Oxford-IIIT Pet dataset", "bash data/download.sh", "data=synthetic"
    )
    assert not (tmp_path / "run").exists()  # no empty run folder left under outputs/runs/


def error_line(tmp_path, *overrides: str) -> str:
    """The line `python -m cats_model.train OVERRIDES` ends with (exit_on_user_error's `error: ...`), from a
    training in this process as the CLI's main() runs it; the CLI's own line and exit code are held by the tests
    that start it. No run folder is left."""
    cfg = compose_train_config([*overrides, "print_config=false"], tmp_path / "run")
    with pytest.raises(Exception) as raised, removed_if_failed_empty(tmp_path / "run", "train.log"):
        train(cfg)
    cause = user_error_in(raised.value)
    assert cause is not None, raised.value  # a UserError, not a crash
    assert "\n" not in str(cause), cause
    assert not (tmp_path / "run").exists()
    return f"error: {cause}"


def test_unknown_config_choice_gets_hydras_message(tmp_path):
    with pytest.raises(UserError, match=re.escape("Could not find 'model/resnet999'")):
        compose_train_config(["model=resnet999"], tmp_path / "run")


def test_gpu_requested_without_one(tmp_path):
    line = error_line(tmp_path, *SMOKE, "trainer.accelerator=gpu")
    assert line.startswith("error: trainer.accelerator=gpu but no CUDA GPU is visible"), line


def test_pretrained_weights_that_cannot_be_fetched(tmp_path, monkeypatch):
    # A proxy on a closed loopback port makes the download fail at once, as it would offline.
    proxy = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("https_proxy", proxy)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's opener reads the proxy when it is built
    line = error_line(tmp_path, *SMOKE, "model.pretrained=true", f"model.weights_dir={tmp_path}/weights")
    assert line.startswith("error: could not fetch ImageNet weights for mobilenet_v3_small"), line
    assert "model.pretrained=false" in line
    # and never trains from scratch silently: error_line saw no run folder left


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "trainer.max_epochs=abc",
            "error: trainer.max_epochs='abc' is not a valid value: expected int or null",
        ),
        ("data.batch_size=big", "error: data.batch_size='big' is not a valid value: expected int"),
        ("model.pretrained=maybe", "error: model.pretrained='maybe' is not a valid value: expected bool"),
        ("model.backbone=resnet999", "error: unknown backbone 'resnet999': choose one of resnet18"),
        ("optimizer._target_=nonexistent", "error: unknown optimizer 'nonexistent'"),
        (
            "data._target_=cats_model.data.Nope",
            "error: data._target_='cats_model.data.Nope' is not an importable",
        ),
    ],
)
def test_values_of_the_wrong_kind(tmp_path, override, message):
    line = error_line(tmp_path, *SMOKE, override)
    assert line.startswith(message), line


def test_a_failed_start_removes_only_a_run_folder_with_nothing_of_its_own(tmp_path):
    def hydra_leftovers(run_dir):
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
        (run_dir / "train.log").write_text("[cats_model.data.datamodule][INFO] - data: 12 classes\n")
        (run_dir / ".lock").write_text("pid 1234 on host since 2026-11-30 00:00:00\n")
        return run_dir

    assert remove_if_empty(hydra_leftovers(tmp_path / "fresh"), "train.log")
    assert not (tmp_path / "fresh").exists()
    earlier = hydra_leftovers(tmp_path / "earlier")
    (earlier / "checkpoints").mkdir()  # an earlier run's work: a resume that failed keeps everything
    in_use = hydra_leftovers(tmp_path / "in-use")  # another training starting in the same folder holds it
    with open(in_use / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for kept in (earlier, in_use):
            assert not remove_if_empty(kept, "train.log")
            assert {p.name for p in kept.iterdir()} >= {".hydra", ".lock", "train.log"}


def test_a_mistyped_override_key_names_the_closest_one(tmp_path):
    result = run_cli_in_process("trainer.max_epoch=3", f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(
        result, "trainer.max_epoch is not a key of the config (did you mean trainer.max_epochs?)"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batchsize=8", "data.batchsize is not a key of the config (did you mean data.batch_size?)"),
        ("seeed=1", "seeed is not a key of the config (did you mean seed?)"),
        (
            "trainer.zzz=1",
            "trainer.zzz is not a key of the config: check its spelling, or add it with +trainer.zzz",
        ),
    ],
)
def test_mistyped_keys_are_one_line_where_a_config_is_composed(override, message):
    with pytest.raises(UserError) as raised:
        compose_train_config([override])
    assert str(raised.value).startswith(message)


def test_unknown_data_choice_lists_the_choices(tmp_path):
    result = run_cli_in_process("data=imagenet", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0] == "In 'train': Could not find 'data/imagenet'"
    assert "\tcat_breeds" in result.stderr


@pytest.mark.slow
def test_a_sweep_on_modal_without_credentials(tmp_path):
    # A process of its own: Modal's client finds its config file under HOME as it is imported.
    result = run_cli(
        "-m", "hydra/launcher=modal", *SMOKE, "trainer.max_epochs=1,2", f"hydra.sweep.dir={tmp_path}/sweep",
        env_extra={"HOME": str(tmp_path), "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""},
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: Modal is not authenticated: run `modal token new` once, or try the sweep on this machine with "
        "hydra.launcher.backend=local"
    ]
    assert "Launching" not in result.stdout  # nothing was launched
    assert not (tmp_path / "sweep").exists()  # nor is a folder left behind


@pytest.mark.slow
def test_secrets_in_the_environment_are_never_written(tmp_path):
    secret = "as-secret-0123456789abcdef"
    result = run_cli_in_process(
        *SMOKE,
        f"hydra.run.dir={tmp_path}/run",
        env_extra={"MODAL_TOKEN_SECRET": secret, "WANDB_API_KEY": secret},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert secret not in result.stdout + result.stderr
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def error_before_any_data_is_read(tmp_path, override: str) -> str:
    """The UserError that training with `override` stops with. The dataset folder does not exist: had anything
    read data first, the error would say so instead. Nothing is written."""
    cfg = compose_train_config(
        [*FAST_ANY_DATA, "data=cat_breeds", f"data.root={tmp_path}/none", override, "print_config=false"],
        tmp_path / "run",
    )
    with pytest.raises(UserError) as error:
        train(cfg)
    assert not (tmp_path / "run").exists()
    return str(error.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.batch_size=0", "an integer >= 2"),
        ("data.batch_size=-1", "an integer >= 2"),
        ("data.batch_size=1", "an integer >= 2"),  # batch norm cannot train on one image
        ("optimizer.lr=-1", "a number > 0"),
        ("optimizer.lr=.nan", "a number > 0"),
        ("optimizer.weight_decay=-1", "a number >= 0"),
        ("trainer.max_epochs=-5", "an integer >= 1"),
        ("trainer.max_epochs=0", "an integer >= 1"),  # would test an untrained model
        ("data.image_size=0", "an integer in [32, 2048]"),
        ("data.image_size=7", "an integer in [32, 2048]"),
        ("data.num_workers=-1", f"an integer in [0, {4 * available_cpus()}]"),
        ("data.num_workers=100000", f"an integer in [0, {4 * available_cpus()}]"),  # would fork without end
        ("data.val_fraction=1.5", "a number in (0, 1)"),
        ("data.crop_scale=[2.0,1.0]", "two numbers [low, high], each in (0, 1], low <= high"),
        ("data.crop_scale=[0.9,0.2]", "two numbers [low, high], each in (0, 1], low <= high"),
        ("data.max_bad_fraction=2", "a number in [0, 1]"),
        ("data.color_jitter=1.5", "a number in [0, 1]"),
        (
            "+trainer.limit_train_batches=1.5",
            "an integer >= 0 (batches) or a number in [0, 1] (a fraction of them)",
        ),
        ("scheduler.min_lr_ratio=-0.1", "a number in [0, 1]"),
        ("model.label_smoothing=1", "a number in [0, 1)"),
    ],
)
def test_values_out_of_range_are_one_line_before_any_data_is_read(tmp_path, override, expected):
    message = error_before_any_data_is_read(tmp_path, override)
    assert message.startswith(f"{override.split('=')[0].lstrip('+')}=")
    assert message.endswith(f"is not a valid value: expected {expected}")


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "optimizer._target_=nonexistent",
            "unknown optimizer 'nonexistent': optimizer._target_ must name an importable Optimizer class, "
            "or choose optimizer=adamw|sgd",
        ),
        ("optimizer._target_=torch.nn.Linear", "unknown optimizer 'torch.nn.Linear'"),
        (
            "+optimizer.weight_dekay=0.1",
            "optimizer.weight_dekay is not a setting of torch.optim.AdamW (did you mean optimizer.weight_decay?)",
        ),
        ("optimizer.lr=fast", "optimizer.lr='fast' is not a valid value: expected a number > 0"),
        ("scheduler._target_=nowhere.schedule", "unknown scheduler 'nowhere.schedule'"),
        ("~scheduler.min_lr_ratio", "scheduler.min_lr_ratio is missing"),
        ("scheduler.warmup_epochs=one", "scheduler.warmup_epochs='one' is not a valid value: expected float"),
    ],
)
def test_optimizer_and_scheduler_mistakes_are_one_line_before_any_data_is_read(tmp_path, override, message):
    assert error_before_any_data_is_read(tmp_path, override).startswith(message)


@pytest.mark.parametrize(
    "override, message",
    [
        # Hydra's own hint for a key its config lacks is to add it with +: that ends here, with the closest key.
        (
            "+trainer.max_epoch=3",
            "trainer.max_epoch is not a setting of Lightning's Trainer (did you mean trainer.max_epochs?)",
        ),
        ("+trainer.fast=true", "trainer.fast is not a setting of Lightning's Trainer: remove it"),
        # A group's shared base is listed among its choices by Hydra; choosing it leaves a value unset.
        (
            "model=default",
            "model.backbone is not set: give it a value (model.backbone=...), or choose model=",
        ),
    ],
)
def test_keys_that_nothing_takes_and_values_left_unset_are_one_line(tmp_path, override, message):
    assert error_before_any_data_is_read(tmp_path, override).startswith(message)


def test_a_folder_dataset_without_its_root_says_so(tmp_path):
    cfg = compose_train_config([*FAST_ANY_DATA, "data=folder", "print_config=false"], tmp_path / "run")
    with pytest.raises(UserError, match=r"^data.root is not set: give it a value \(data.root=\.\.\.\)"):
        train(cfg)


@pytest.mark.parametrize("make", [None, "file"])
def test_a_folder_dataset_whose_root_is_missing_or_a_file_says_so(tmp_path, make):
    root = tmp_path / "no_such_photos"
    if make == "file":
        root.write_text("not a folder")
    overrides = [*FAST_ANY_DATA, "data=folder", f"data.root={root}", "print_config=false"]
    what = "is not a folder" if make else "does not exist"
    with pytest.raises(UserError, match=rf"^data.root={root} {what}: give the folder of your photos"):
        train(compose_train_config(overrides, tmp_path / "run"))


def test_fractions_that_leave_nothing_to_train_on(tmp_path):
    cfg = compose_train_config(
        [
            *FAST_ANY_DATA,
            "data=folder",
            f"data.root={tmp_path}",
            "data.val_fraction=0.5",
            "data.test_fraction=0.5",
        ],
        tmp_path / "run",
    )
    with pytest.raises(
        UserError, match=r"^data.val_fraction \+ data.test_fraction = 1 leaves no images to train on"
    ):
        train(cfg)


def numeric_keys(node, prefix="") -> set[str]:
    keys = set()
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            keys |= numeric_keys(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            keys.add(name)
        elif isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
            keys.add(name)
    return keys


# Numbers that any value fits, or that Lightning checks itself in one line.
NO_RANGE_NEEDED = {"data.seed", "data.synthetic.seed", "trainer.devices"}


def test_every_number_in_the_configs_has_a_range():
    configs = [
        compose_train_config([f"{group}={choice.stem}", *extra])
        for group, extra in [
            ("data", []),
            ("optimizer", []),
            ("scheduler", []),
            ("trainer", []),
            ("debug", ["data=folder"]),
        ]
        for choice in sorted((CONFIG_DIR / group).glob("*.yaml"))
    ]
    keys = set().union(*(numeric_keys(OmegaConf.to_container(cfg, resolve=False)) for cfg in configs))
    keys = {key for key in keys if not key.startswith(("hydra.", "paths.", "hparams_search."))}
    assert keys - set(RANGES) - NO_RANGE_NEEDED == set()


def test_a_value_out_of_range_on_the_command_line(tmp_path):
    line = error_line(tmp_path, *SMOKE, "data.batch_size=0")
    assert line == "error: data.batch_size=0 is not a valid value: expected an integer >= 2", line
