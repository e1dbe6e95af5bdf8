"""modal.yml and pyproject.toml, read into plain values: what the Modal app should look like, not Modal calls."""

from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path

import yaml

from cats_model.errors import UserError
from cats_model.paths import PROJECT_ROOT
from cats_model.system import CPUS_ENV

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

MODAL_YML = PROJECT_ROOT / "modal.yml"
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
TORCH_PACKAGES = ("torch", "torchvision")  # their build follows the GPU (cloud/image.py)
MAX_TIMEOUT = 86400  # Modal's longest function timeout (24 h)


@dataclass(frozen=True)
class Call:
    """One call of the Modal `train` function: its Modal options, and its place in its run and its sweep.

    Travels to the function as a plain dict (`asdict`), so that caller and container need share no code version.
    """

    gpu: str
    timeout: int | None  # seconds; None: no deadline (a call run here, on this machine)
    max_containers: int | None = None  # a sweep's hydra.launcher.max_parallel
    segment: int = 1  # runs longer than the timeout continue in further calls
    spent_s: float = 0.0  # container seconds of the run's earlier calls
    sweep: str | None = None
    job: int | None = None

    def options(self) -> dict:
        """The arguments of Function.with_options for this call."""
        options = {"gpu": self.gpu, "timeout": self.timeout, "max_containers": self.max_containers}
        return {key: value for key, value in options.items() if value is not None}

    @property
    def gpu_count(self) -> int:
        _, _, count = self.gpu.partition(":")
        return int(count or 1)

    def next(self, seconds: float) -> "Call":
        """The call that continues this one's run after it ran `seconds`."""
        return replace(self, segment=self.segment + 1, spent_s=round(self.spent_s + seconds, 2))

    def to_dict(self) -> dict:
        return asdict(self)


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
    def cpu_torch_index_url(self) -> str:
        return self.raw["image"]["cpu_torch_index_url"]

    def volume(self, key: str) -> tuple[str, str]:
        """(volume name, mount path) of `data` or `outputs`."""
        entry = self.raw["volumes"][key]
        return entry["name"], entry["mount"]

    def resources(self, section: str) -> dict:
        """The cpu and memory options of a Modal function, each (request, limit), and the environment that sizes
        its thread pools to the CPU request."""
        entry = self.raw[section]
        cpu, memory = tuple(entry["cpu"]), tuple(entry["memory"])
        return {"cpu": cpu, "memory": memory, "env": {CPUS_ENV: str(cpu[0])}}

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
    def tools(self) -> dict:
        return self.raw["tools"]

    @property
    def tensorboard(self) -> dict:
        return self.raw["tensorboard"]

    @property
    def gpu_prices(self) -> dict[str, float]:
        # Modal reads GPU types case-insensitively (it upper-cases them: _utils/function_utils.py::parse_gpu_config).
        return {kind.upper(): price for kind, price in self.raw["prices"]["gpu"].items()}

    def call(self, gpu: str | None = None, timeout: str | int | None = None, **placement) -> Call:
        """A train call on `gpu` with `timeout` (modal.yml's when None), checked before anything is paid for."""
        gpu = self.checked_gpu(str(gpu or self.train["gpu"]))
        timeout = self.train["timeout"] if timeout is None else timeout
        low = self.train["stop_before_timeout"]
        if not str(timeout).isdigit() or not low < int(timeout) <= MAX_TIMEOUT:
            raise UserError(
                f"timeout={timeout} must be a whole number of seconds above train.stop_before_timeout "
                f"({low}) and at most {MAX_TIMEOUT} (Modal's limit)"
            )
        return Call(gpu=gpu, timeout=int(timeout), **placement)

    def checked_gpu(self, gpu: str, key: str = "gpu") -> str:
        """`gpu` if Modal can give it (a type of modal.yml's prices, at most max_gpus of it in one container),
        else a UserError, before anything is submitted or paid for (Modal itself refuses it only at submission)."""
        kind, _, count = gpu.partition(":")
        if kind.upper() not in self.gpu_prices or not (count == "" or count.isdigit() and int(count) > 0):
            raise UserError(
                f"{key}={gpu} is not a GPU type of modal.yml: use one of {', '.join(self.raw['prices']['gpu'])}, "
                "optionally with :N for N GPUs (e.g. gpu=A10G:2)"
            )
        limits = {name.upper(): most for name, most in self.raw["max_gpus"].items()}
        most = limits.get(kind.upper(), limits["DEFAULT"])
        if int(count or 1) > most:
            raise UserError(
                f"{key}={gpu} asks for {count} {kind} GPUs in one container: Modal gives at most {most} "
                "(max_gpus in modal.yml)"
            )
        return gpu

    def hourly_price(self, gpu: str | None = None) -> float:
        """USD per hour of one train container: its GPUs, and its CPU cores and memory at their limits (Modal bills
        the greater of request and use, and use stays under the limit)."""
        kind, _, count = str(gpu or self.train["gpu"]).partition(":")
        prices = self.raw["prices"]
        return (
            self.gpu_prices.get(kind.upper(), 0.0) * int(count or 1)
            + prices["cpu_core"] * float(self.train["cpu"][1])
            + prices["memory_gib"] * self.train["memory"][1] / 1024
        )

    def cost(self, seconds: float, gpu: str | None = None) -> float:
        return seconds / 3600 * self.hourly_price(gpu)


@cache
def load_settings(path: Path = MODAL_YML) -> Settings:
    return Settings(yaml.safe_load(Path(path).read_text()))


def dependencies(path: Path = PYPROJECT) -> list[str]:
    """The runtime dependencies of pyproject.toml: one list for local installs and the Modal image."""
    return list(tomllib.loads(Path(path).read_text())["project"]["dependencies"])
