"""Check config values before anything runs: each against the type hints of what it configures, and every number
against its allowed range (RANGES). A typo or an impossible value fails in one line, before data is read."""

import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf

from cats_model.data.synthetic import DOG_BREEDS
from cats_model.errors import UserError
from cats_model.paths import CONFIG_DIR
from cats_model.system import available_cpus


def check_values(
    cfg: DictConfig, trainer_arguments: Callable[[DictConfig], dict] | None = None
) -> dict | None:
    """Every check of the values: data and model settings against their classes, optimizer and scheduler against
    their targets, the Trainer's settings, numbers against their ranges. `trainer_arguments`: how the training
    process builds the Trainer's arguments from `cfg.trainer` (its hardware decides some); given, their types are
    checked too and the arguments returned. Without it (where a Modal run or sweep is composed, before any
    container starts), the Trainer's keys only: some of its values interpolate Hydra's run folder, unset there."""
    import lightning as L
    import torch

    check_all_set(cfg)
    check_known(dict.fromkeys(cfg.trainer), L.Trainer, "trainer", "Lightning's Trainer")
    trainer_args = None
    if trainer_arguments is not None:  # the types before the ranges, which say less of a value like 'abc'
        trainer_args = trainer_arguments(cfg.trainer)
        check_arguments(L.Trainer, trainer_args, "trainer")
    for group in ("data", "model"):
        target = importable(str(cfg[group]._target_))
        if not isinstance(target, type):
            raise UserError(
                f"{group}._target_={cfg[group]._target_!r} is not an importable class: check its spelling"
            )
        check_arguments(target, OmegaConf.to_container(cfg[group], resolve=True), group)
    check_target(cfg.optimizer, "optimizer", torch.optim.Optimizer, given=("params",))
    if cfg.scheduler is not None:
        check_target(cfg.scheduler, "scheduler", given=("optimizer", "total_steps", "epochs"))
    check_ranges(cfg)
    return trainer_args


def check_all_set(cfg: DictConfig) -> None:
    """No value left `???`: a group's shared base (`model=default`) or a config that needs a value from the user
    (`data=folder` needs `data.root`) says which, in one line. Read without resolving, since some values
    interpolate Hydra's run folder, unset where a sweep is composed: OmegaConf.missing_keys resolves every value
    it walks past (omegaconf 2.3), and fails there."""
    values = OmegaConf.to_container(cfg, resolve=False)
    values.pop("hydra", None)
    missing = sorted(_missing_keys(values))
    if missing:
        key = missing[0]
        group = key.split(".")[0]
        choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if p.stem != "default")
        choose = f", or choose {group}={'|'.join(choices)}" if choices else ""
        raise UserError(f"{key} is not set: give it a value ({key}=...){choose}")


def _missing_keys(values: Any) -> list[str]:
    return [key for key, value in leaves(values) if value == "???"]


def leaves(values: Any, prefix: str = ""):
    """(dotted key, value) of every value in nested dicts and lists (a list item's key is its index)."""
    if isinstance(values, dict):
        for key, value in values.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(values, list):
        for index, value in enumerate(values):
            yield from leaves(value, f"{prefix}{index}.")
    else:
        yield prefix[:-1], values


def check_arguments(target: Any, settings: dict, group: str) -> None:
    """Raise a UserError naming `group.key` for the first value that does not fit the type hints of `target`
    (a class's __init__, or a function)."""
    hints = {}
    for cls in reversed(getattr(target, "__mro__", [target])):  # subclasses pass **kwargs on to their bases
        try:
            hints.update(typing.get_type_hints(cls.__init__ if isinstance(cls, type) else cls))
        except Exception:  # unresolvable forward references: nothing to check against
            continue
    for key, value in settings.items():
        if key in hints and not fits(value, hints[key]):
            raise UserError(f"{group}.{key}={value!r} is not a valid value: expected {describe(hints[key])}")


def check_known(settings: dict, target: Any, group: str, name: str, given: tuple[str, ...] = ()) -> None:
    """Every key of `settings` must be a keyword argument of `target` (unless it takes **kwargs): a typo such as
    `trainer.max_epoch` is one line with the closest setting, not a TypeError deep in a constructor."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = [key for key in parameters if key not in given and key != "self"]
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {group}.{close[0]}?)" if close else ""
            raise UserError(
                f"{group}.{key} is not a setting of {name}{hint}: remove it or check its spelling"
            )


def check_target(node: DictConfig, group: str, kind: type | None = None, given: tuple[str, ...] = ()) -> None:
    """A `_target_` config (optimizer, scheduler): it must name `kind` (a subclass) or any callable, importable,
    that takes its settings as keyword arguments, each of a fitting type. `given`: the arguments the code adds."""
    settings = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    target = node.get("_target_")
    found = importable(str(target))
    if not callable(found) or (
        kind is not None and not (isinstance(found, type) and issubclass(found, kind))
    ):
        choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        raise UserError(
            f"unknown {group} {target!r}: {group}._target_ must name an importable "
            f"{f'{kind.__name__} class' if kind else 'function or class'}, or choose {group}={'|'.join(choices)}"
        )
    parameters = inspect.signature(found).parameters
    check_known(settings, found, group, str(target), given)
    for name, parameter in parameters.items():
        required = parameter.default is parameter.empty and parameter.kind in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        )
        if required and name not in settings and name not in given:
            raise UserError(f"{group}.{name} is missing: {target} needs it")
    check_arguments(found, settings, group)


def importable(path: str) -> Any:
    """The object a dotted path names (`torch.optim.AdamW`), or None: found by `_locate`, the lookup of Hydra's
    instantiate itself, so that what passes here is what training will build. Not by its public
    `hydra.utils.get_object`, which logs an error of several lines before it raises: a mistake is one line."""
    try:
        return _locate(path)
    except Exception:
        return None


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value suits a type hint of what it configures. By hand: OmegaConf's structured configs
    check only dataclasses of their own, and the hints here (Lightning's Trainer, the data and model classes)
    hold unions and classes that OmegaConf cannot represent; their errors are several lines besides."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # classes, callables, protocols: not judged here


def describe(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(hint))
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (None: unbounded), each end included unless marked open."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else int | float):
            return False
        above = self.low is None or value > self.low or (value == self.low and not self.open_low)
        below = self.high is None or value < self.high or (value == self.high and not self.open_high)
        finite = isinstance(value, int) or math.isfinite(value)  # NaN fails the comparisons too
        return finite and above and below

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high is None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        return f"{kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


@dataclass(frozen=True)
class OrderedPair:
    """Two numbers of `each`, the first no larger than the second."""

    each: Range

    def __contains__(self, value: Any) -> bool:
        return (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(v in self.each for v in value)
            and value[0] <= value[1]
        )

    def __str__(self) -> str:
        return f"two numbers [low, high], each {str(self.each).removeprefix('a number ')}, low <= high"


@dataclass(frozen=True)
class CountOrFraction:
    """Lightning's `limit_*_batches`: a number of batches, or a fraction of them."""

    def __contains__(self, value: Any) -> bool:
        return value in Range(0, integer=True) or value in Range(0.0, 1.0)

    def __str__(self) -> str:
        return "an integer >= 0 (batches) or a number in [0, 1] (a fraction of them)"


POSITIVE, NON_NEGATIVE, UNIT = Range(0, open_low=True), Range(0), Range(0, 1)
FRACTION = Range(0, 1, open_low=True, open_high=True)  # of the images: neither none nor all
COUNT, AT_LEAST_ONE = Range(0, integer=True), Range(1, integer=True)
WORKERS_PER_CPU = 4
TOP_K = 3  # classes shown per image where the caller (predict, a request to the server) does not say
TOP_K_ALLOWED = AT_LEAST_ONE  # more than a model's classes shows them all
# The allowed values of every number a user can set, by config key; null stays allowed where the type allows it.
RANGES = {
    "seed": Range(0, 2**32 - 1, integer=True),
    "data.image_size": Range(32, 2048, integer=True),  # 32: every backbone downsamples by 32
    "data.batch_size": Range(2, integer=True),  # batch norm cannot train on batches of one image
    # Loader processes: a few per CPU at most (100000 would fork until the machine stalls).
    "data.num_workers": Range(0, WORKERS_PER_CPU * available_cpus(), integer=True),
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.crop_scale": OrderedPair(Range(0, 1, open_low=True)),
    "data.color_jitter": UNIT,  # brightness, contrast and saturation factors drawn from [1 - x, 1 + x]
    "data.max_bad_fraction": UNIT,
    "data.other_per_cat": POSITIVE,
    "data.synthetic.trainval_per_class": Range(2, integer=True),
    "data.synthetic.test_per_class": AT_LEAST_ONE,
    "data.synthetic.dog_breeds": Range(0, len(DOG_BREEDS), integer=True),
    "data.synthetic.min_size": Range(8, integer=True),
    "data.synthetic.max_size": Range(8, integer=True),
    "model.label_smoothing": Range(0, 1, open_high=True),
    "model.max_false_reject": Range(0, 1, open_high=True),
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.momentum": Range(0, 1, open_high=True),
    "scheduler.warmup_epochs": NON_NEGATIVE,
    "scheduler.min_lr_ratio": UNIT,
    "trainer.max_epochs": AT_LEAST_ONE,
    "trainer.min_epochs": COUNT,
    "trainer.check_val_every_n_epoch": AT_LEAST_ONE,
    "trainer.log_every_n_steps": AT_LEAST_ONE,
    "trainer.accumulate_grad_batches": AT_LEAST_ONE,
    "trainer.gradient_clip_val": NON_NEGATIVE,
    "trainer.limit_train_batches": CountOrFraction(),
    "trainer.limit_val_batches": CountOrFraction(),
    "trainer.limit_test_batches": CountOrFraction(),
    "callbacks.best_checkpoint.save_top_k": Range(-1, integer=True),  # -1: keep every epoch's
    "callbacks.last_checkpoint.save_top_k": AT_LEAST_ONE,
    "callbacks.model_summary.max_depth": Range(-1, integer=True),
    "callbacks.progress_bar.every_n_steps": AT_LEAST_ONE,
    "callbacks.progress_bar.every_n_seconds": POSITIVE,
}


def check_ranges(cfg: DictConfig) -> None:
    """Raise a UserError naming the key and its allowed values for the first value out of range."""
    for key, allowed in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):  # a list
            value = OmegaConf.to_container(value, resolve=True)
        if value is not None and value not in allowed:
            raise UserError(f"{key}={value!r} is not a valid value: expected {allowed}")
    held_out = cfg.data.get("val_fraction", 0) + cfg.data.get("test_fraction", 0)
    if held_out >= 1:
        raise UserError(
            f"data.val_fraction + data.test_fraction = {held_out:g} leaves no images to train on: keep it under 1"
        )
    synthetic = cfg.data.get("synthetic")
    if synthetic and synthetic.min_size > synthetic.max_size:
        raise UserError(
            f"data.synthetic.min_size={synthetic.min_size} is larger than data.synthetic.max_size={synthetic.max_size}"
        )
