"""Library messages that mean nothing to a user are silenced precisely: the same text from elsewhere, or
another message from the same place, still shows."""

import contextlib
import logging
import warnings

from cats_model.noise import LITLOGGER_TIP, mounts_redirected, resuming_quietly, silence_library_noise

LEAFSPEC = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
NOT_EMPTY = "Checkpoint directory /runs/r/checkpoints exists and is not empty."
SMALL_DATA = (
    "The number of training batches (3) is smaller than the logging interval Trainer(log_every_n_steps=10). Set a "
    "lower value for log_every_n_steps if you want to see logs for the training epoch."
)
MODAL_LOCAL = (
    "The train function is executing locally and will not have access to the mounted Volume or "
    "NetworkFileSystem data"
)
PYTREE, MODEL_CHECKPOINT, FIT_LOOP, MODAL = (
    "lightning.pytorch.utilities._pytree",
    "lightning.pytorch.callbacks.model_checkpoint",
    "lightning.pytorch.loops.fit_loop",
    "modal._functions",
)


def shown(warns: list[tuple[str, type, str]], resuming: bool = False, local: bool = False) -> list[str]:
    """The messages of `warns` (message, category, emitting module) that reach the user."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_library_noise()
        with (
            resuming_quietly() if resuming else contextlib.nullcontext(),
            mounts_redirected() if local else contextlib.nullcontext(),
        ):
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


def test_the_small_data_logging_warning_is_silenced_only_where_the_fit_loop_gives_it():
    assert shown([(SMALL_DATA, UserWarning, FIT_LOOP)]) == []
    assert shown([(SMALL_DATA, UserWarning, "my_code")]) == [SMALL_DATA]


def test_modal_warns_of_missing_volumes_only_outside_a_local_call_with_redirected_mounts():
    assert shown([(MODAL_LOCAL, UserWarning, MODAL)]) == [MODAL_LOCAL]
    assert shown([(MODAL_LOCAL, UserWarning, MODAL)], local=True) == []
    assert shown([("Another Modal warning.", UserWarning, MODAL)], local=True) == ["Another Modal warning."]


def test_the_tests_filter_the_warnings_a_run_filters():
    # No silence_library_noise() here: pytest's own filters (from tests/conftest.py) must drop it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit(
            LEAFSPEC, FutureWarning, "lightning/pytorch/utilities/_pytree.py", 21, module=PYTREE
        )
    assert caught == []


def test_lightnings_lines_that_say_nothing_to_act_on_are_dropped_and_others_kept(caplog):
    silence_library_noise()
    source = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=source.name):
        source.info(f"{LITLOGGER_TIP} and experiment tracking, try installing [litlogger](...)")
        source.info("Loading `train_dataloader` to estimate number of stepping batches.")
        source.info("Restoring states from the checkpoint path at /r/checkpoints/best.ckpt")
        source.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
