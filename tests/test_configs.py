"""Every config choice composes, and what it describes can be built."""

import inspect
import os
import re
from pathlib import Path

import pytest
import torch
from helpers import FAST
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from cats_model.config import compose_train_config
from cats_model.data.datamodule import ImageDataModule
from cats_model.errors import UserError
from cats_model.instantiators import instantiate_callbacks, instantiate_loggers
from cats_model.model.backbones import BACKBONES
from cats_model.model.classifier import CatClassifier
from cats_model.paths import CONFIG_DIR
from cats_model.run_layout import (
    BEST_PREFIX,
    CHECKPOINT_SUFFIX,
    HYDRA_DIR,
    LAST_CHECKPOINT,
    RUN_NAME,
    SWEEPS_DIR,
    checkpoint_dir,
    run_dir,
)
from cats_model.train import allow_tf32, trainer_arguments


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if p.stem != "default")


def test_the_readme_lists_every_choice_hydra_offers():
    """Each row of the README's table of config groups names every file of its group: what Hydra lists among
    the choices when one is mistyped."""
    readme = (CONFIG_DIR.parent / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)`(?: / `(\w+)`)? \|(.*)\|$", readme, re.MULTILINE)
    assert {"data", "model", "trainer", "callbacks", "logger", "optimizer", "scheduler"} <= {
        group for row in rows for group in row[:2]
    }
    for first, second, text in rows:
        for group in filter(None, (first, second)):
            missing = {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")} - set(
                re.findall(r"`(\w+)`", text)
            )
            assert not missing, (group, missing)


def test_defaults_compose_to_cat_breeds_resnet18(tmp_path):
    cfg = compose_train_config([], tmp_path)
    assert cfg.data._target_.endswith("CatBreedsDataModule")
    assert cfg.model.backbone == "resnet18" and cfg.model.pretrained is True
    assert cfg.data.root.endswith("oxford-iiit-pet")
    assert cfg.paths.checkpoint_dir == str(tmp_path / "checkpoints")


def test_the_configs_lay_out_a_run_as_run_layout_names_it(tmp_path, monkeypatch):
    """The names the configs repeat (the run and sweep folders, the checkpoints), held against their source."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "outputs"))
    hydra = compose_train_config([]).hydra
    cfg = compose_train_config([], run_dir(tmp_path, "r1"))
    name = compose_train_config([]).run_name
    assert RUN_NAME.fullmatch(name) and re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", name)  # fresh_run_name's
    assert Path(hydra.run.dir).parent == run_dir(tmp_path / "outputs", "x").parent
    assert Path(hydra.sweep.dir).parent == tmp_path / "outputs" / SWEEPS_DIR
    assert hydra.output_subdir == HYDRA_DIR
    assert Path(cfg.paths.checkpoint_dir) == checkpoint_dir(run_dir(tmp_path, "r1"))
    last, best = cfg.callbacks.last_checkpoint, cfg.callbacks.best_checkpoint
    assert last.dirpath == best.dirpath == cfg.paths.checkpoint_dir
    assert ModelCheckpoint.FILE_EXTENSION == CHECKPOINT_SUFFIX  # Lightning adds it to the file names
    assert last.filename + CHECKPOINT_SUFFIX == LAST_CHECKPOINT and best.filename.startswith(BEST_PREFIX)


def test_a_default_run_name_is_read_alike_wherever_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path))
    cfg = compose_train_config([])
    assert cfg.run_name == cfg.run_name and Path(cfg.hydra.run.dir).name == cfg.run_name


def test_model_choices_are_exactly_the_supported_backbones():
    assert choices("model") == sorted(BACKBONES)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_with_a_fitted_head(tmp_path, backbone):
    cfg = compose_train_config([f"model={backbone}", "model.pretrained=false"], tmp_path)
    model = instantiate(cfg.model, class_names=["a", "b", "c"], optimizer=None, scheduler=None)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("choice", choices("optimizer"))
def test_optimizer_choices_build_without_weight_decay_on_1d_parameters(tmp_path, choice):
    settings = OmegaConf.to_container(compose_train_config([f"optimizer={choice}"], tmp_path).optimizer)
    model = CatClassifier(
        ["a", "b"], "mobilenet_v3_small", pretrained=False, optimizer=settings, scheduler=None
    )
    optimizer = model.configure_optimizers()  # no scheduler: the optimizer alone
    assert type(optimizer) is get_class(settings["_target_"])
    decayed, plain = optimizer.param_groups
    assert (decayed["lr"], decayed["weight_decay"], plain["weight_decay"]) == (
        settings["lr"],
        settings["weight_decay"],
        0.0,
    )
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("data", ["cat_breeds", "cat_vs_other", "synthetic", "folder"])
def test_every_data_choice_composes(tmp_path, data):
    cfg = compose_train_config([f"data={data}"], tmp_path)
    assert {"root", "image_size", "batch_size", "num_workers"} <= set(cfg.data)


def test_the_synthetic_data_gives_model_ready_batches(tmp_path):
    dm = instantiate(compose_train_config(FAST, tmp_path).data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.class_names) == 12
    images, labels = next(iter(dm.train_dataloader()))
    assert dm.pipeline.on_device(images, train=True).shape == (16, 3, 32, 32) and labels.max() < 12


def test_the_data_config_and_the_datamodule_default_alike():
    """configs/data/default.yaml states the defaults for users; ImageDataModule's signature for Python callers."""
    defaults = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    parameters = inspect.signature(ImageDataModule).parameters
    shared = [
        key
        for key in defaults
        if key in parameters
        and not OmegaConf.is_missing(defaults, key)
        and not OmegaConf.is_interpolation(defaults, key)
    ]
    assert {"image_size", "crop_scale", "color_jitter", "pipeline"} <= set(shared)
    for key in shared:
        expected = parameters[key].default
        assert defaults[key] == (list(expected) if isinstance(expected, tuple) else expected), key


def test_every_callback_choice_instantiates(tmp_path):
    for choice in [*choices("callbacks"), "default"]:
        built = instantiate_callbacks(compose_train_config([f"callbacks={choice}"], tmp_path).callbacks)
        assert all(obj is not None for obj in built), choice
    assert len(instantiate_callbacks(compose_train_config(["logger=none"], tmp_path).callbacks)) == 4


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "none"])
def test_logger_choices_instantiate(tmp_path, logger):
    built = instantiate_loggers(compose_train_config([f"logger={logger}"], tmp_path).logger)
    assert len(built) == (logger != "none") and all(obj is not None for obj in built)


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_optional_logger_choices_instantiate_or_name_their_package(tmp_path, logger):
    cfg = compose_train_config([f"logger={logger}"], tmp_path)
    try:
        __import__(logger)
    except ModuleNotFoundError:  # not installed here: one line naming the package
        with pytest.raises(UserError, match="the chosen logger needs a package that is not installed"):
            instantiate_loggers(cfg.logger)
        return
    assert all(obj is not None for obj in instantiate_loggers(cfg.logger))


def test_every_logger_choice_is_tried():
    assert choices("logger") == sorted(["csv", "tensorboard", "none", "wandb", "mlflow"])


@pytest.mark.parametrize("experiment", choices("experiment"))
def test_every_experiment_composes(tmp_path, experiment):
    cfg = compose_train_config([f"experiment={experiment}"], tmp_path)
    assert cfg.trainer.max_epochs > 0


@pytest.mark.parametrize("debug", choices("debug"))
def test_every_debug_preset_runs_on_cpu(tmp_path, debug):
    cfg = compose_train_config([f"debug={debug}"], tmp_path)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_epochs == 1


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_trainer_choices_for_any_machine(tmp_path, trainer):
    settings = trainer_arguments(compose_train_config([f"trainer={trainer}"], tmp_path).trainer)
    assert settings["precision"] in ("32-true", "16-mixed", "bf16-mixed")


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_choices_without_a_gpu_are_one_line(tmp_path, monkeypatch, trainer):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        trainer_arguments(compose_train_config([f"trainer={trainer}"], tmp_path).trainer)


def test_every_trainer_choice_is_tried():
    assert choices("trainer") == ["cpu", "ddp", "gpu"]


@pytest.mark.parametrize(
    "capability, precision", [((7, 5), "16-mixed"), ((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed")]
)
def test_gpu_defaults_follow_the_gpu(tmp_path, monkeypatch, capability, precision):
    """What trainer=gpu gives a T4 (7.5), an A100 (8.0), an H100 (9.0): the GPU is pretended, the configs are real."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    settings = trainer_arguments(compose_train_config(["trainer=gpu"], tmp_path).trainer)
    assert (settings["accelerator"], settings["precision"], settings["benchmark"]) == ("gpu", precision, True)
    assert calls == []  # reading the settings changes nothing in the process
    allow_tf32(settings)
    assert calls == ["high"]  # TF32 for the float32 matrix products left outside autocast


def test_tf32_stays_off_on_a_cpu(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    allow_tf32(trainer_arguments(compose_train_config(["trainer=cpu"], tmp_path).trainer))
    assert calls == []


def test_configs_hold_no_unresolvable_interpolations(tmp_path):
    cfg = compose_train_config(FAST, tmp_path)
    for key in cfg:
        if key != "hydra":  # Hydra's own node is read-only and resolved by Hydra
            node = cfg[key]  # reading a value resolves it: a dangling ${...} raises here
            if OmegaConf.is_config(node):
                OmegaConf.to_container(node, resolve=True)


def test_the_download_lands_where_the_oxford_configs_read(tmp_path):
    from cats_model.download import default_root

    for data in ("cat_breeds", "cat_vs_other"):
        assert compose_train_config([f"data={data}"], tmp_path).data.root == str(default_root())
    assert default_root().parent == Path(os.environ["CATS_MODEL_DATA_DIR"])  # moved with the data folder


@pytest.mark.parametrize("search", choices("hparams_search"))
def test_every_hparams_search_composes(tmp_path, search):
    cfg = compose_train_config([f"hparams_search={search}"], tmp_path)
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key  # each searches a key the config has


def test_python_defaults_say_what_the_configs_say(tmp_path):
    """configs/ decides the defaults (what a run prints and checks); the Python defaults of the classes they
    configure, and the bench's image size, serve use without Hydra and must be the same values."""
    from cats_model.bench.cli import parse_args

    cfg = compose_train_config([], tmp_path)
    for group, cls in (("data", ImageDataModule), ("model", CatClassifier)):
        declared = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / "default.yaml"))
        parameters = inspect.signature(cls.__init__).parameters
        for key, value in declared.items():
            machine_folder = str(value).startswith("${paths.")
            if key == "_target_" or value == "???" or machine_folder:
                continue
            default = parameters[key].default
            default = list(default) if isinstance(default, tuple) else default
            assert default == cfg[group][key], f"{group}.{key}"
    image_size = cfg.data.image_size
    assert inspect.signature(CatClassifier.__init__).parameters["image_size"].default == image_size
    assert parse_args([]).image_size == image_size
