"""CUDA out of memory, injected: `+callbacks.oom._target_=oom_fault.OutOfMemoryAtFirstBatch` (tests/ on PYTHONPATH)."""

import lightning as L
import torch


class OutOfMemoryAtFirstBatch(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.56 GiB total)"
        )
