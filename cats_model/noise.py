"""Library messages that tell a user of this project nothing, silenced where they arise: each one by its own
text, its category and the module that emits it, so that every other warning and log line still shows."""

import contextlib
import logging
import warnings

LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"


class _WithoutLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LITLOGGER_TIP)


def silence_library_noise() -> None:
    """Process-wide; calling it again changes nothing."""
    # Lightning 2.6 advertises its cloud logger each time a Trainer is built without it.
    tip_source = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _WithoutLitLoggerTip) for f in tip_source.filters):
        tip_source.addFilter(_WithoutLitLoggerTip())
    # torch deprecates LeafSpec, which Lightning 2.6 still builds when it flattens a batch: Lightning's to fix.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


@contextlib.contextmanager
def resuming_quietly():
    """Around a fit that resumes: the checkpoint folder is not empty because it holds this run's own checkpoints,
    which Lightning would report as if they were a stranger's."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"Checkpoint directory .* exists and is not empty",
            category=UserWarning,
            module=r"lightning\.pytorch\.callbacks\.model_checkpoint",
        )
        yield
