"""The override strings of a Modal run: those that pick its machine, those the function fixes, and those of a
sweep."""

from cats_model.errors import UserError

# Applied with Function.with_options; the training process ignores them.
LAUNCH_KEYS = ("gpu", "timeout")
# Set by the Modal function itself: a remote run's files live in runs/<run name> on the outputs volume.
FIXED_KEYS = ("paths", "hydra.run", "hydra.runtime", "hydra.output_subdir", "run_name")
# What makes a composition a multirun: the container runs one training, never a sweep of its own.
SWEEP_KEYS = ("hparams_search", "hydra/sweeper", "hydra.sweeper", "hydra/launcher", "hydra.launcher")
SWEEP_KEYS += ("hydra.sweep", "hydra.mode")


def key(override: str) -> str:
    """`+a.b=1`, `~a.b`, `a/b=c` -> `a.b`, `a.b`, `a/b`."""
    return override.lstrip("~+").split("=", 1)[0].strip()


def has_key(override: str, keys: tuple[str, ...]) -> bool:
    name = key(override)
    return any(name == k or name.startswith((f"{k}.", f"{k}/")) for k in keys)


def split_run_name(args) -> tuple[list[str], str | None]:
    """Separate `run_name=NAME` (it picks the run folder) from the Hydra overrides."""
    overrides = [a for a in args if a != "--"]
    names = [a.split("=", 1)[1] for a in overrides if key(a) == "run_name"]
    return [a for a in overrides if key(a) != "run_name"], (names[-1] if names else None)


def split_launch(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate `gpu=NAME` and `timeout=SECONDS` (Modal options of the call) from the training overrides."""
    launch = {key(o): o.split("=", 1)[1] for o in overrides if key(o) in LAUNCH_KEYS and "=" in o}
    return [o for o in overrides if key(o) not in LAUNCH_KEYS], launch


def check_not_fixed(overrides: list[str]) -> None:
    for override in overrides:
        if has_key(override, FIXED_KEYS):
            raise UserError(
                f"{override} cannot be set for a Modal run: its files live on the outputs volume in "
                "runs/<run name> (run_name=NAME picks the run): drop it"
            )


def one_run(overrides: list[str]) -> list[str]:
    """The overrides of one training run: no sweep keys (a container runs one training, never a sweep of its own)."""
    return [o for o in overrides if not has_key(o, SWEEP_KEYS)]
