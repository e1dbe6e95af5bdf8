import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory) -> Path:
    """Every test reads and writes data under one temporary directory, never the checkout's data/."""
    path = tmp_path_factory.mktemp("data")
    previous = os.environ.get("CATS_MODEL_DATA_DIR")
    os.environ["CATS_MODEL_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CATS_MODEL_DATA_DIR", None)
    else:
        os.environ["CATS_MODEL_DATA_DIR"] = previous


@pytest.fixture(autouse=True, scope="module")
def torch_threads():
    """Loading a model for inference sets PyTorch's process-wide thread count: each module gets it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_hydra(hydra_restore_singletons):
    """Hydra's global state (version base, config store, resolvers) is restored after every test."""
    yield


@pytest.fixture(scope="session")
def modal_app():
    """launch/modal_app.py, imported as Modal's CLI would (no Modal token needed)."""
    from cats_model.cloud.calls import load_modal_app

    return load_modal_app()


def started_modal_service(root, **options):
    """The offline Modal service (tests/modal_service.py), its containers importing the app files of launch/
    (and the fault callbacks of tests/)."""
    from modal_service import ModalService

    from cats_model.paths import PROJECT_ROOT

    return ModalService(root, app_dirs=[PROJECT_ROOT / "launch", PROJECT_ROOT / "tests"], **options).start()


@pytest.fixture
def modal_service(tmp_path):
    service = started_modal_service(tmp_path / "modal")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def module_modal_service(tmp_path_factory):
    """One service for a module whose tests share what its first calls made."""
    service = started_modal_service(tmp_path_factory.mktemp("modal"))
    yield service
    service.stop()


@pytest.fixture
def modal_client(modal_service, monkeypatch):
    """This process's modal client pointed at the offline service (a fresh client: the last one knew another)."""
    import modal.client

    for key, value in modal_service.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CATS_MODEL_RESULT_POLL_S", "0.5")
    monkeypatch.setattr("cats_model.cloud.calls.RESULT_POLL_S", 0.5)
    modal.client._Client._set_env_client(None)
    yield modal_service
    modal.client._Client._set_env_client(None)
