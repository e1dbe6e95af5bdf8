"""Library messages that mean nothing to a user are silenced precisely: the same text from elsewhere, or
another message from the same place, still shows."""

import contextlib
import logging
import warnings

from cats_model.noise import LITLOGGER_TIP, resuming_quietly, silence_library_noise

LEAFSPEC = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
NOT_EMPTY = "Checkpoint directory /runs/r/checkpoints exists and is not empty."
PYTREE, MODEL_CHECKPOINT = (
    "lightning.pytorch.utilities._pytree",
    "lightning.pytorch.callbacks.model_checkpoint",
)


def shown(warns: list[tuple[str, type, str]], resuming: bool = False) -> list[str]:
    """The messages of `warns` (message, category, emitting module) that reach the user."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_library_noise()
        with resuming_quietly() if resuming else contextlib.nullcontext():
            for message, category, module in warns:
                warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
    return [str(w.message) for w in caught]


def test_the_leafspec_deprecation_is_silenced_only_where_lightning_triggers_it():
    assert shown([(LEAFSPEC, FutureWarning, PYTREE)]) == []
    assert shown([(LEAFSPEC, FutureWarning, "my_code")]) == [LEAFSPEC]
    assert shown([("something else is deprecated", FutureWarning, PYTREE)]) == [
        "something else is deprecated"
    ]


def test_a_non_empty_checkpoint_folder_is_reported_unless_the_run_resumes():
    assert shown([(NOT_EMPTY, UserWarning, MODEL_CHECKPOINT)]) == [NOT_EMPTY]
    assert shown([(NOT_EMPTY, UserWarning, MODEL_CHECKPOINT)], resuming=True) == []
    assert shown([("Other warning.", UserWarning, MODEL_CHECKPOINT)], resuming=True) == ["Other warning."]


def test_the_litlogger_tip_is_dropped_and_other_lightning_lines_kept(caplog):
    silence_library_noise()
    source = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=source.name):
        source.info(f"{LITLOGGER_TIP} and experiment tracking, try installing [litlogger](...)")
        source.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
