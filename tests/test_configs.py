"""Every config choice composes, and what it describes can be built."""

import pytest
import torch
from conftest import FAST, compose_train_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cats_model.errors import UserError
from cats_model.model.backbones import BACKBONES
from cats_model.paths import CONFIG_DIR
from cats_model.train import _instantiate_all, _loggers, trainer_settings


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if p.stem != "default")


def test_defaults_compose_to_cat_breeds_resnet18(tmp_path):
    cfg = compose_train_config([], tmp_path)
    assert cfg.data._target_.endswith("CatBreedsDataModule")
    assert cfg.model.backbone == "resnet18" and cfg.model.pretrained is True
    assert cfg.data.root.endswith("oxford-iiit-pet")
    assert cfg.paths.checkpoint_dir == str(tmp_path / "checkpoints")


def test_model_choices_are_exactly_the_supported_backbones():
    assert choices("model") == sorted(BACKBONES)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_with_a_fitted_head(tmp_path, backbone):
    cfg = compose_train_config([f"model={backbone}", "model.pretrained=false"], tmp_path)
    model = instantiate(cfg.model, class_names=["a", "b", "c"], optimizer=None, scheduler=None)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("data", ["cat_breeds", "cat_vs_other", "synthetic", "folder"])
def test_every_data_choice_composes(tmp_path, data):
    cfg = compose_train_config([f"data={data}"], tmp_path)
    assert {"root", "image_size", "batch_size", "num_workers"} <= set(cfg.data)
    if data == "synthetic":
        dm = instantiate(compose_train_config(FAST, tmp_path).data, _convert_="all")
        dm.prepare_data()
        assert len(dm.class_names) == 12
        images, labels = next(iter(dm.train_dataloader()))
        assert dm.finish_batch(images, train=True).shape == (16, 3, 32, 32) and labels.max() < 12


@pytest.mark.parametrize("group", ["callbacks", "logger"])
def test_every_callback_and_logger_choice_instantiates(tmp_path, group):
    build = _loggers if group == "logger" else _instantiate_all
    for choice in choices(group) + ["default"] * (group == "callbacks"):
        cfg = compose_train_config([f"{group}={choice}"], tmp_path)
        try:
            built = build(cfg.get(group))
        except UserError as err:  # W&B and MLflow when their packages are not installed
            assert choice in ("wandb", "mlflow") and "needs a package" in str(err)
            continue
        assert all(obj is not None for obj in built)
    assert len(_instantiate_all(compose_train_config(["logger=none"], tmp_path).callbacks)) == 4


@pytest.mark.parametrize("experiment", choices("experiment"))
def test_every_experiment_composes(tmp_path, experiment):
    cfg = compose_train_config([f"experiment={experiment}"], tmp_path)
    assert cfg.trainer.max_epochs > 0


@pytest.mark.parametrize("debug", choices("debug"))
def test_every_debug_preset_runs_on_cpu(tmp_path, debug):
    cfg = compose_train_config([f"debug={debug}"], tmp_path)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_epochs == 1


@pytest.mark.parametrize("trainer", choices("trainer") + ["default"])
def test_trainer_choices(tmp_path, trainer):
    cfg = compose_train_config([f"trainer={trainer}"], tmp_path)
    wants_gpu = cfg.trainer.accelerator == "gpu"
    if wants_gpu and not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            trainer_settings(cfg.trainer)
    else:
        settings = trainer_settings(cfg.trainer)
        assert settings["precision"] in ("32-true", "16-mixed", "bf16-mixed")


@pytest.mark.parametrize(
    "capability, precision", [((7, 5), "16-mixed"), ((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed")]
)
def test_gpu_defaults_follow_the_gpu(tmp_path, monkeypatch, capability, precision):
    """What trainer=gpu gives a T4 (7.5), an A100 (8.0), an H100 (9.0): the GPU is pretended, the configs are real."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    settings = trainer_settings(compose_train_config(["trainer=gpu"], tmp_path).trainer)
    assert (settings["accelerator"], settings["precision"], settings["benchmark"]) == ("gpu", precision, True)
    assert calls == ["high"]  # TF32 for the float32 matrix products left outside autocast


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
