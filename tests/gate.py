"""A callback that holds training at the start of an epoch until a file appears, so that a test can act at a
known point of a run in another process (read what it has printed so far, say) before letting it go on.

Added with `+callbacks.gate._target_=gate.WaitForFile +callbacks.gate.path=... +callbacks.gate.before_epoch=N`
(tests/ on PYTHONPATH). The timeout only keeps a broken test from hanging: the run then fails.
"""

import time
from pathlib import Path

import lightning as L


class WaitForFile(L.Callback):
    def __init__(self, path: str, before_epoch: int, timeout_s: float = 120):
        self.path, self.before_epoch, self.timeout_s = Path(path), before_epoch, timeout_s

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != self.before_epoch:
            return
        deadline = time.monotonic() + self.timeout_s
        while not self.path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.path} did not appear within {self.timeout_s} s")
            time.sleep(0.05)
