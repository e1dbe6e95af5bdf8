"""Stopping a Modal call cleanly before its timeout, so that a new call continues the run from its last
checkpoint."""

import time

import lightning as L

from cats_model.errors import CONTINUE_EXIT


class StopBeforeDeadline(L.Callback):
    """At the first training batch that starts after Unix time `at`: save `checkpoint`, exit with CONTINUE_EXIT.

    At least one batch runs in every process, so that a chain of calls always makes progress. The Modal train
    function adds this callback with `at` a margin before its timeout (train.stop_before_timeout in modal.yml).
    """

    def __init__(self, at: float, checkpoint: str):
        self.at, self.checkpoint = at, checkpoint
        self._batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Every rank decides alike: any rank past the deadline stops all.
        late = self._batches > 0 and time.time() >= self.at
        past = trainer.strategy.reduce_boolean_decision(late, all=False)
        self._batches += 1
        if past:
            trainer.save_checkpoint(self.checkpoint)  # through the trainer's atomic checkpoint IO
            raise SystemExit(CONTINUE_EXIT)
