"""image.lock: the Modal image installs the exact versions the tests ran, and the lock keeps up with pyproject."""

import shutil
import subprocess
import sys
from importlib import metadata

import modal
import pytest

from cats_model.cloud.image import project_image
from cats_model.cloud.lock import disagreements, locked
from cats_model.cloud.settings import dependencies, load_settings
from cats_model.paths import PROJECT_ROOT


def test_the_lock_agrees_with_pyproject():
    assert disagreements() == [], "refresh it: python scripts/lock_image.py (README, 'The image')"
    assert "modal" not in locked()  # the container's client comes from Modal's own mount


def test_a_lock_that_pyproject_outgrew_is_named_line_by_line():
    changed = [r for r in dependencies() if not r.startswith(("torch>", "rich"))] + [
        "torch>=2.15",
        "requests>=2",
    ]
    assert disagreements(changed) == [
        "torch==2.14.1 in image.lock is outside pyproject.toml's torch>=2.15",
        "requests is not in image.lock",
        "pyproject.toml's dependencies changed since image.lock was written",
    ]


def test_the_refresh_script_writes_the_lock_it_reads(tmp_path):
    """scripts/lock_image.py, run on a copy of the checkout: a current lock of this environment's versions,
    extras (uvicorn[standard]) and CUDA libraries included."""
    copy = tmp_path / "checkout"
    shutil.copytree(
        PROJECT_ROOT, copy, ignore=shutil.ignore_patterns(".git", "data", "runs", "outputs", "*.ckpt")
    )
    (copy / "image.lock").unlink()
    result = subprocess.run(
        [sys.executable, "scripts/lock_image.py"], cwd=copy, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    written = locked(copy / "image.lock")
    assert disagreements(path=copy / "image.lock") == []
    assert {name: metadata.version(name) for name in written} == written  # this environment's versions
    assert {"torch", "lightning", "uvloop", "nvidia-cudnn-cu13"} <= set(written) and "modal" not in written


@pytest.fixture
def installs(monkeypatch) -> list:
    """The image's package installs, recorded as Modal's own Image builds them."""
    recorded, real = [], modal.Image.uv_pip_install

    def record(image, *packages, **options):
        recorded.append((list(packages), options.get("index_url")))
        return real(image, *packages, **options)

    monkeypatch.setattr(modal.Image, "uv_pip_install", record)
    monkeypatch.setattr(modal.Image, "pip_install", None)  # every install is an exact pin of the lock
    return recorded


def test_the_gpu_image_installs_exactly_the_lock(installs):
    project_image({"X": "1"})
    pins = locked()
    assert installs == [([f"{name}=={version}" for name, version in pins.items()], None)]
    assert {"nvidia-cudnn-cu13", "triton"} <= set(pins)  # torch's CUDA build, from PyPI, pinned too


def test_an_image_without_gpu_gets_cpu_only_torch_and_no_cuda_libraries(installs):
    project_image({"X": "1"}, gpu=False)
    pins = locked()
    (torch, index), (rest, none) = installs
    assert torch == [f"torch=={pins['torch']}", f"torchvision=={pins['torchvision']}"]
    assert index == load_settings().cpu_torch_index_url and none is None
    assert f"lightning=={pins['lightning']}" in rest
    assert not [p for p in rest if p.startswith(("nvidia-", "cuda-", "triton", "torch=", "torchvision="))]


def test_the_package_ships_with_its_page_and_without_caches():
    """The server's page travels inside the package (cats_model/serve/page/), where the package reads it: what
    the image mounts under /root/cats_model is the package's source and its page, no bytecode."""
    from modal._utils.async_utils import synchronizer
    from modal.mount import _Mount

    def mounts(image):
        for dep in image._deps() if image._deps else []:
            yield from [dep] if isinstance(dep, _Mount) else mounts(dep)

    image = synchronizer._translate_in(project_image({"X": "1"}, gpu=False))
    shipped = {
        remote
        for mount in mounts(image)
        for entry in mount._entries
        for _, remote in entry.get_files_to_upload()
        if str(remote).startswith("/root/cats_model/")
    }
    package = PROJECT_ROOT / "cats_model"
    on_disk = [*package.rglob("*.py"), *(package / "serve" / "page").iterdir()]
    assert {f"/root/{p.relative_to(PROJECT_ROOT).as_posix()}" for p in on_disk} == {str(p) for p in shipped}
    assert "/root/cats_model/serve/page/index.html" in {str(p) for p in shipped}
