"""The launcher's work: compose every job here, run the jobs in parallel on a backend, return JobReturns."""

import contextlib
import hashlib
import json
import logging
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from cats_model.cloud.sweep_summary import summary_row, write_summary

log = logging.getLogger(__name__)


@dataclass
class Job:
    idx: int
    overrides: list[str]
    config: DictConfig
    run_name: str = ""


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "Launching %d jobs on %s, %d at a time", len(job_overrides), launcher.backend, launcher.max_parallel
    )

    jobs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        # Every job's config is composed here: the remote side only receives what is shipped.
        config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        jobs.append(Job(idx, list(overrides), config, run_name=sweep_run_name(sweep_dir, idx)))

    run = run_local if launcher.backend == "local" else run_modal
    returns = run(launcher, jobs)

    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    price = _hourly_price() if launcher.backend == "modal" else 0.0
    launcher.summary_rows += [
        summary_row(job.idx, job.overrides, ret, price) for job, ret in zip(jobs, returns)
    ]
    print(write_summary(sweep_dir, launcher.summary_rows), flush=True)
    return returns


def sweep_run_name(sweep_dir: Path, idx: int) -> str:
    """Distinct per job, and the same when the same sweep (same hydra.sweep.dir) runs again: then it resumes."""
    tag = re.sub(r"[^A-Za-z0-9._-]", "-", sweep_dir.name)[-48:].strip("-.") or "sweep"
    return f"{tag}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}-{idx}"


# ---------------------------------------------------------------------------------------------- local backend


def run_local(launcher, jobs: list[Job]) -> list[JobReturn]:
    """Each job in a fresh process, given its pickled payload, as a remote call would be."""
    state = Singleton.get_state()  # Hydra's singletons and OmegaConf's resolvers, for the fresh process

    def payload(job: Job) -> bytes:
        return cloudpickle.dumps((launcher.hydra_context, launcher.task_function, job.config, state))

    with ThreadPoolExecutor(launcher.max_parallel) as threads:
        results = list(threads.map(lambda job: _in_fresh_process(payload(job)), jobs))
    returns = []
    for job, result in zip(jobs, results):
        if isinstance(result, BaseException):  # the process itself died
            result = _failed(job, result)
        returns.append(result)
    return returns


def _in_fresh_process(payload: bytes) -> JobReturn | BaseException:
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
            return cloudpickle.loads(process.submit(execute_payload, payload).result())
    except BaseException as err:  # the process died (BrokenProcessPool), or exited
        return err


def execute_payload(payload: bytes) -> bytes:
    """Runs in the job's own process: Hydra's run_job over the shipped config."""
    hydra_context, task_function, config, state = cloudpickle.loads(payload)
    Singleton.set_state(state)
    setup_globals()
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    return cloudpickle.dumps(ret)


# ---------------------------------------------------------------------------------------------- Modal backend


def run_modal(launcher, jobs: list[Job]) -> list[JobReturn]:
    """Each job is a call of the project's Modal `train(overrides, run_name)`, all in parallel."""
    metric = OmegaConf.select(launcher.config, "optimized_metric")
    with _modal_calls() as (prepare_data, train):
        from cats_model.cloud.entry import needs_oxford_download

        if any(needs_oxford_download(job.config) for job in jobs):
            prepare_data()

        def call(job: Job) -> dict | BaseException:
            try:
                return train(job.overrides, job.run_name)
            except Exception as err:  # one failing job never stops the others
                return err

        with ThreadPoolExecutor(launcher.max_parallel) as threads:
            results = list(threads.map(call, jobs))

    # Hydra's own run_job then gives each job its folder, saved config, callbacks and JobReturn.
    returns = []
    for job, result in zip(jobs, results):
        returns.append(
            run_job(
                hydra_context=launcher.hydra_context,
                task_function=_replay(result, metric),
                config=job.config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        )
    return returns


def _replay(result: dict | BaseException, metric: str | None) -> Callable[[DictConfig], object]:
    """A task function that reports a finished remote call as if the job had run here."""

    def task(cfg: DictConfig):
        if isinstance(result, BaseException):
            raise result
        out = Path(HydraConfig.get().runtime.output_dir)
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        if "error" in result:
            from cats_model.errors import UserError

            raise UserError(result["error"])
        return result.get(metric) if metric else None

    return task


@contextlib.contextmanager
def _modal_calls():
    """The Modal calls to make: those of a running `modal run` entrypoint, or the app run from here."""
    from cats_model.cloud import entry

    if entry.ACTIVE_CALLS is not None:
        yield entry.ACTIVE_CALLS["prepare_data"], entry.ACTIVE_CALLS["train"]
        return
    import modal

    from cats_model.errors import UserError

    modal_app = entry.load_modal_app()
    try:
        with modal.enable_output(), modal_app.app.run():
            yield modal_app.prepare_data.remote, modal_app.train.remote
    except modal.exception.AuthError as err:
        raise UserError(
            "Modal is not authenticated: run `modal token new` once, or try the sweep here with "
            "hydra.launcher.backend=local"
        ) from err


def _hourly_price() -> float:
    from cats_model.cloud.settings import load_settings

    return load_settings().hourly_price()


def _failed(job: Job, err: BaseException) -> JobReturn:
    ret = JobReturn(overrides=job.overrides, cfg=job.config, hydra_cfg=job.config, status=JobStatus.FAILED)
    ret.return_value = err
    return ret
