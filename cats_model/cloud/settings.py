"""modal.yml and pyproject.toml, read into plain values: what the Modal app should look like, not Modal calls."""

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from cats_model.paths import PROJECT_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

MODAL_YML = PROJECT_ROOT / "modal.yml"
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
TORCH_PACKAGES = ("torch", "torchvision")


@dataclass(frozen=True)
class Settings:
    raw: dict

    @property
    def app_name(self) -> str:
        return self.raw["app_name"]

    @property
    def python_version(self) -> str:
        return str(self.raw["image"]["python_version"])

    @property
    def torch_index_url(self) -> str:
        return self.raw["image"]["torch_index_url"]

    def volume(self, key: str) -> tuple[str, str]:
        """(volume name, mount path) of `data` or `outputs`."""
        entry = self.raw["volumes"][key]
        return entry["name"], entry["mount"]

    @property
    def train(self) -> dict:
        return self.raw["train"]

    @property
    def prepare_data(self) -> dict:
        return self.raw["prepare_data"]

    @property
    def serve(self) -> dict:
        return self.raw["serve"]

    @property
    def gpu_count(self) -> int:
        _, _, count = str(self.train["gpu"]).partition(":")
        return int(count or 1)

    def hourly_price(self, gpu: str | None = None) -> float:
        """USD per hour of one train container: its GPUs, CPU cores and memory."""
        gpu = gpu or str(self.train["gpu"])
        kind, _, count = gpu.partition(":")
        prices = self.raw["prices"]
        return (
            prices["gpu"].get(kind, 0.0) * int(count or 1)
            + prices["cpu_core"] * float(self.train["cpu"])
            + prices["memory_gib"] * self.train["memory"] / 1024
        )


@cache
def load_settings(path: Path = MODAL_YML) -> Settings:
    return Settings(yaml.safe_load(Path(path).read_text()))


def dependencies(path: Path = PYPROJECT) -> list[str]:
    """The runtime dependencies of pyproject.toml: one list for local installs and the Modal image."""
    return list(tomllib.loads(Path(path).read_text())["project"]["dependencies"])


def split_torch(requirements: list[str]) -> tuple[list[str], list[str]]:
    """(torch and torchvision requirements, the rest): the first come from the CUDA index of modal.yml."""

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()

    torch = [r for r in requirements if name(r) in TORCH_PACKAGES]
    return torch, [r for r in requirements if name(r) not in TORCH_PACKAGES]
