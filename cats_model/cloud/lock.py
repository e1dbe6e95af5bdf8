"""image.lock: the exact versions the Modal image installs (those the test suite ran), and its tie to pyproject.toml.

scripts/lock_image.py writes it; tests/test_image_lock.py fails when it and pyproject.toml disagree.
"""

import hashlib
import re
from pathlib import Path

from packaging.requirements import Requirement

from cats_model.cloud.settings import dependencies, load_settings
from cats_model.paths import PROJECT_ROOT

LOCK = PROJECT_ROOT / "image.lock"
HASH_PREFIX = "# pyproject.toml dependencies sha256: "
# The container's modal client comes from Modal's own mount: installing it too would only cost build time and
# could change grpclib or protobuf under the runtime.
NOT_IN_IMAGE = ("modal",)
# What only a CUDA build of torch needs: a serving image without a GPU goes without.
CUDA_ONLY = re.compile(r"nvidia-.*|cuda-.*|triton")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_hash(requirements: list[str] | None = None) -> str:
    """The hash of pyproject's dependency list, recorded in the lock: any edit of the list changes it."""
    return hashlib.sha256("\n".join(requirements or dependencies()).encode()).hexdigest()


def locked(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: exact version} of the lock, in its order."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def recorded_hash(path: Path = LOCK) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(HASH_PREFIX):
            return line.removeprefix(HASH_PREFIX).strip()
    return None


def image_environment() -> dict[str, str]:
    """The marker values of the image: Modal's Debian on x86-64, modal.yml's Python."""
    python = load_settings().python_version
    return {
        "python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
        "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
        "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": "",
    }  # fmt: skip


def disagreements(requirements: list[str] | None = None, path: Path = LOCK) -> list[str]:
    """Where the lock and pyproject's dependencies disagree: one line each (none when the lock is current)."""
    requirements = dependencies() if requirements is None else requirements
    pins, problems = locked(path), []
    for text in requirements:
        requirement = Requirement(text)
        name = canonical(requirement.name)
        if name in NOT_IN_IMAGE:
            if name in pins:
                problems.append(f"{name} is in {path.name}, but the container's client comes from Modal")
        elif requirement.marker and not requirement.marker.evaluate(image_environment()):
            continue  # not installed on the image's Python
        elif name not in pins:
            problems.append(f"{name} is not in {path.name}")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} in {path.name} is outside pyproject.toml's {requirement}")
    if recorded_hash(path) != dependency_hash(requirements):
        problems.append(f"pyproject.toml's dependencies changed since {path.name} was written")
    return problems
