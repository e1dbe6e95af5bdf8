"""Library messages that tell a user of this project nothing, silenced where they arise: each one by its own
text, its category and the module that emits it, so that every other warning and log line still shows."""

import contextlib
import logging
import warnings

LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
# Lightning's info lines (its rank_zero logger) that say nothing a user can act on.
DROPPED_LINES = (
    LITLOGGER_TIP,  # an advertisement for Lightning's cloud logger, each time a Trainer is built without it
    "Loading `train_dataloader` to estimate number of stepping batches.",  # the schedule's length, asked early
    # which checkpoint the test runs on: the run's summary block names it (a resumed fit: "resuming from ...")
    "Restoring states from the checkpoint path at ",
    "Restored all states from the checkpoint at ",
    "Loaded model weights from the checkpoint at ",
    "`Trainer.fit` stopped: `max_epochs=",  # the summary block says how many epochs ran
)
# (message regex, category, emitting module regex) of warnings that are silenced in every run, and in the tests
# (tests/conftest.py adds them to pytest's filters, which replace these around each test).
WARNINGS = (
    # torch deprecates LeafSpec, which Lightning 2.6 still builds when it flattens a batch: Lightning's to fix.
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
    ),
    # Step-wise logging on small data: the project's curves and progress lines are per epoch.
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        Warning,
        r"lightning\.pytorch\.loops\.fit_loop",
    ),
)


class _WithoutDroppedLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED_LINES)


def silence_library_noise() -> None:
    """Process-wide; calling it again changes nothing."""
    source = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _WithoutDroppedLines) for f in source.filters):
        source.addFilter(_WithoutDroppedLines())
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def resuming_quietly():
    """Around a fit that resumes: the checkpoint folder is not empty because it holds this run's own checkpoints,
    which Lightning would report as if they were a stranger's."""
    return _ignoring(
        r"Checkpoint directory .* exists and is not empty", r"lightning\.pytorch\.callbacks\.model_checkpoint"
    )


def mounts_redirected():
    """Around a Modal function's body run on this machine (`.local()`) with its mount points redirected to local
    folders (CATS_MODEL_DATA_DIR, CATS_MODEL_OUTPUT_DIR): Modal would warn, once per job, that the volumes are
    missing, which is the point."""
    return _ignoring(
        r"The \w+ function is executing locally and will not have access to the mounted Volume",
        r"modal\._functions",
    )


@contextlib.contextmanager
def _ignoring(message: str, module: str):
    """One UserWarning of one module ignored for the duration."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)
        yield
