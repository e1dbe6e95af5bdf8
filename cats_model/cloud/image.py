"""The container image of every Modal app of the project (training and serving): one recipe, from pyproject.toml
and modal.yml alone."""

import modal

from cats_model.cloud.settings import MODAL_YML, PYPROJECT, dependencies, load_settings, split_torch
from cats_model.paths import CONFIG_DIR
from cats_model.serve import PAGE_DIR


def project_image(env: dict[str, str]) -> modal.Image:
    """pyproject's dependencies (torch and torchvision from modal.yml's CUDA index), `env`, then the package.

    `add_local_python_source` ships .py files only: the configs, the server's page, and the two files the app
    modules read on import are added as they are. Local files come last, so that editing code never rebuilds the
    dependency layers (and Modal allows no build step after them)."""
    settings = load_settings()
    torch_requirements, other_requirements = split_torch(dependencies())
    return (
        modal.Image.debian_slim(python_version=settings.python_version)
        .pip_install(*torch_requirements, index_url=settings.torch_index_url)
        .pip_install(*other_requirements)
        .env(env)
        .add_local_python_source("cats_model")
        .add_local_dir(PAGE_DIR, "/root/cats_model/serve/page")
        .add_local_dir(CONFIG_DIR, "/root/configs")
        .add_local_file(MODAL_YML, "/root/modal.yml")
        .add_local_file(PYPROJECT, "/root/pyproject.toml")
    )
