"""Jobs that start at once on one data folder, as sweep jobs do locally and containers do on the data volume."""

import hashlib

import forked
import numpy as np
from helpers import FAST
from hydra.utils import instantiate

from cats_model.config import compose_train_config

JOBS, ROUNDS = 4, 3
_start = None


def _wait_for_the_others(barrier) -> None:
    global _start
    _start = barrier


def prepare(data_dir: str) -> tuple[str, str]:
    """One job's data setup (the synthetic dataset, then the decoded cache), begun with the others at once."""
    dm = instantiate(compose_train_config([*FAST, f"paths.data_dir={data_dir}"]).data, _convert_="all")
    _start.wait()
    dm.prepare_data()
    dm.setup("fit")
    next(iter(dm.train_dataloader()))  # the cache is read as training reads it
    cache_file = dm.pipeline.cache_file
    return cache_file.name, hashlib.sha256(np.load(cache_file).tobytes()).hexdigest()


def test_jobs_starting_at_once_on_an_empty_data_folder_all_complete(tmp_path):
    # Four processes of their own, forked with torch imported (tests/forked.py), three times over.
    barrier = forked.CONTEXT.Barrier(JOBS)
    with forked.CONTEXT.Pool(JOBS, initializer=_wait_for_the_others, initargs=(barrier,)) as pool:
        for round_ in range(ROUNDS):
            data_dir = tmp_path / f"round{round_}"  # empty: every job finds nothing there
            results = pool.map_async(prepare, [str(data_dir)] * JOBS, chunksize=1).get(timeout=300)
            assert len(set(results)) == 1, results  # one cache, the same content for every job
            assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []  # no staging left
