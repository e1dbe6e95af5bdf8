"""The container image of every Modal app of the project (training and serving): one recipe, from image.lock
and modal.yml alone."""

import modal

from cats_model.cloud.lock import CUDA_ONLY, LOCK, locked
from cats_model.cloud.settings import MODAL_YML, TORCH_PACKAGES, load_settings
from cats_model.paths import CONFIG_DIR

# What ships of the package: its Python source and the server's page (cats_model/serve/page/), which the package
# reads beside its source. Everything else is left out, as by default (NON_PYTHON_FILES): caches, bytecode.
PACKAGE_FILES = ("**/*.py", "serve/page/*")


def locked_requirements(gpu: bool = True) -> list[list[str]]:
    """The image's installs, in order, each a list of exact pins from image.lock. Without a GPU: first torch and
    torchvision in their CPU-only build (modal.yml's cpu_torch_index_url), then the rest without CUDA's
    libraries; they find torch installed."""
    pins = locked()
    if gpu:
        return [[f"{name}=={version}" for name, version in pins.items()]]
    torch = [f"{name}=={pins[name]}" for name in TORCH_PACKAGES]
    rest = [f"{n}=={v}" for n, v in pins.items() if n not in TORCH_PACKAGES and not CUDA_ONLY.fullmatch(n)]
    return [torch, rest]


def project_image(env: dict[str, str], gpu: bool = True) -> modal.Image:
    """image.lock's exact versions (CPU-only torch when the image is for no GPU), `env`, then the package.

    The package ships with its page (PACKAGE_FILES); the configs and the two files the app modules read on
    import (modal.yml, image.lock) are added as they are. Local files come last, so that editing code never
    rebuilds the dependency layers (and Modal allows no build step after them)."""
    settings = load_settings()
    image = modal.Image.debian_slim(python_version=settings.python_version)
    installs = locked_requirements(gpu)
    if not gpu:
        image = image.uv_pip_install(*installs.pop(0), index_url=settings.cpu_torch_index_url)
    for requirements in installs:
        image = image.uv_pip_install(*requirements)
    return (
        image.env(env)
        .add_local_python_source("cats_model", ignore=~modal.FilePatternMatcher(*PACKAGE_FILES))
        .add_local_dir(CONFIG_DIR, "/root/configs")
        .add_local_file(MODAL_YML, "/root/modal.yml")
        .add_local_file(LOCK, "/root/image.lock")
    )
