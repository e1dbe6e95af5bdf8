"""The serving options: batching and the limits on a request, their defaults and allowed ranges. Checked wherever
they are built (`python -m cats_model.serve`'s flags, modal.yml's `serve.options` at `modal deploy`). Imports no
torch: `modal deploy launch/serve_app.py` reads them on the deploying machine."""

import difflib
from dataclasses import asdict, dataclass, fields

from cats_model.errors import UserError
from cats_model.validation import TOP_K, TOP_K_ALLOWED, Range


@dataclass(frozen=True)
class ServeOptions:
    max_batch_size: int = 32  # images in one forward pass
    max_wait_ms: float = 2.0  # how long the first image of a batch waits for company
    max_files: int = 16  # per request
    max_megabytes: float = 20.0  # per request, read or not
    max_megapixels: float = 100.0  # per request, decoded (any one image under Pillow's limit of 89 passes)
    top_k: int = TOP_K  # when a request does not say
    idle_timeout_s: float = 30.0  # a request whose head or body stops arriving for longer is dropped

    def __post_init__(self):  # named as `python -m cats_model.serve` spells them
        check_options(asdict(self), lambda name: f"--{name.replace('_', '-')}")

    @classmethod
    def from_settings(cls, values: dict, where: str) -> "ServeOptions":
        """The options a settings file gives (modal.yml's `serve.options`), the rest at their defaults; an unknown
        key or a value out of range is one line naming it as `where.key`."""
        known = [field.name for field in fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {where}.{close[0]}?)" if close else ""
                raise UserError(f"{where}.{key} is not a serving option{hint}: one of {', '.join(known)}")
        check_options(values, lambda name: f"{where}.{name}")
        return cls(**values)


OPTION_RANGES = {
    "max_batch_size": Range(1, 4096, integer=True),
    "max_wait_ms": Range(0, 1000),
    "max_files": Range(1, 1000, integer=True),
    "max_megabytes": Range(0, 1024, open_low=True),
    "max_megapixels": Range(0, 1000, open_low=True),
    "top_k": TOP_K_ALLOWED,
    "idle_timeout_s": Range(0, 3600, open_low=True),
}


def check_options(values: dict, spelled) -> None:
    """Each option given in its range, or a UserError naming it as `spelled(name)` says. NaN and infinity are
    out of every range: a NaN wait would hang every batch."""
    for name, allowed in OPTION_RANGES.items():
        if name in values and values[name] not in allowed:
            raise UserError(f"{spelled(name)} must be {allowed}, got {values[name]!r}")


DEFAULTS = ServeOptions()
