"""Write image.lock: the exact versions of pyproject.toml's dependencies, and of all they need on the image's
Python (modal.yml) on Linux, as installed in this environment, without modal (its client comes from Modal's
mount). Needs no network.

Run it in the environment the test suite just passed in (`pip install -e '.[dev]'`, then the tests):
    python scripts/lock_image.py
"""

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cats_model.cloud.lock import (  # noqa: E402
    HASH_PREFIX,
    LOCK,
    NOT_IN_IMAGE,
    canonical,
    dependency_hash,
    image_environment,
)
from cats_model.cloud.settings import dependencies, load_settings  # noqa: E402


def closure(requirements: list[str]) -> dict[str, str]:
    """{name: installed version} of `requirements` and, recursively, of what they require in the image."""
    environment, found = image_environment(), {}
    pending = [(Requirement(r), "pyproject.toml") for r in requirements]
    pending = [(r, by) for r, by in pending if _applies(r, environment, "")]
    while pending:
        requirement, wanted_by = pending.pop()
        name = canonical(requirement.name)
        if name in NOT_IN_IMAGE:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(
                f"error: {name} (needed by {wanted_by}) is not installed here: pip install -e '.[dev]' first"
            )
        if not requirement.specifier.contains(distribution.version, prereleases=True):
            sys.exit(f"error: {name} {distribution.version} is installed, {wanted_by} needs {requirement}")
        extras = sorted(requirement.extras)
        key = (name, tuple(extras))
        if key in found:
            continue
        found[key] = distribution.version
        for text in distribution.requires or []:
            needed = Requirement(text)
            if any(_applies(needed, environment, extra) for extra in ["", *extras]):
                pending.append((needed, name))
    return {name: version for (name, _), version in sorted(found.items())}


def _applies(requirement: Requirement, environment: dict, extra: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**environment, "extra": extra})


def main() -> None:
    pins = closure(dependencies())
    header = [
        "# The Modal image's packages: the exact versions the test suite ran (launch/*.py install them).",
        "# Written by `python scripts/lock_image.py`; refresh it after changing pyproject.toml's dependencies.",
        f"{HASH_PREFIX}{dependency_hash()}",
    ]
    LOCK.write_text("\n".join([*header, *(f"{name}=={version}" for name, version in pins.items())]) + "\n")
    print(f"{LOCK.name}: {len(pins)} packages for Python {load_settings().python_version}")


if __name__ == "__main__":
    main()
