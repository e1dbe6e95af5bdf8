"""The launcher's work: compose every job here, make one train call per job, return JobReturns and a summary.

For cats_model.train the jobs are calls of the Modal `train` function (launch/modal_app.py): on Modal, or with the
same function bodies in local processes (backend=local). Any other Hydra app (Hydra's own launcher suites) runs
its task function in fresh local processes, the only thing a launcher can do for code it does not know.
"""

import importlib.util
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from cats_model.atomic import atomic_write_text
from cats_model.cloud.sweep_folder import removed_if_nothing_ran
from cats_model.cloud.sweep_summary import JobFailed, count_jobs, failed_jobs, summary_row, write_summary
from cats_model.errors import UserError, exit_on_user_error
from cats_model.fresh_process import in_fresh_process
from cats_model.run_layout import (
    OVERRIDES_FILE,
    hydra_file,
    metrics_file,
    run_dir,
    sweep_name,
    sweep_run_name,
)

log = logging.getLogger(__name__)


@dataclass
class Job:
    idx: int
    overrides: list[str]
    config: DictConfig
    folder: Path  # the job's folder in the sweep: its config and metrics
    run_name: str = ""


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # The sweep's own errors end on one line (Hydra would add its traceback hint); one that stops the sweep
    # before any job ran also leaves no folder.
    with exit_on_user_error(), removed_if_nothing_ran(sweep_dir):
        return _launch(launcher, job_overrides, initial_job_idx, sweep_dir)


def announce(launcher, jobs: list["Job"]) -> None:
    """Hydra's launch lines, said once the jobs really start (not before a one-line error that stops them)."""
    log.info(
        "Launching %s on %s, %d at a time", count_jobs(len(jobs)), launcher.backend, launcher.max_parallel
    )
    for job in jobs:
        log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))


def _launch(launcher, job_overrides, initial_job_idx: int, sweep_dir: Path) -> list[JobReturn]:
    jobs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        # Every job's config is composed here: a bad value fails before anything is paid for.
        config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        folder = sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))
        jobs.append(
            Job(idx, list(overrides), config, folder, run_name=sweep_run_name(sweep_name(sweep_dir), idx))
        )

    project = is_project_app(launcher.task_function)
    if project:
        returns, cost = run_train_calls(launcher, jobs, sweep_dir)
    elif launcher.backend == "local":
        announce(launcher, jobs)
        returns, cost = run_task_in_processes(launcher, jobs), (lambda metrics: None)
    else:
        raise UserError(
            "hydra/launcher=modal runs cats_model.train on Modal; other apps run here with hydra.launcher.backend=local"
        )

    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    launcher.summary_rows += [
        summary_row(job.idx, job.overrides, ret, cost, run_dir=run_folder(launcher, job) if project else None)
        for job, ret in zip(jobs, returns)
    ]
    print(write_summary(sweep_dir, launcher.summary_rows), flush=True)
    # Hydra's grid sweeper would end on the first failed job with its own lines: one line of ours instead.
    # (Optuna and other sweepers decide themselves what a failed trial means: they get the JobReturns.)
    if OmegaConf.select(launcher.config, "hydra.sweeper._target_", default="").endswith(".BasicSweeper"):
        if failed := failed_jobs(launcher.summary_rows):
            raise failed
    return returns


def is_project_app(task_function) -> bool:
    """Whether the task is cats_model.train's (its module is `__main__` under `python -m cats_model.train`)."""
    code = getattr(task_function, "__code__", None)  # a task can also be a callable object
    train_file = importlib.util.find_spec("cats_model.train").origin  # found without importing torch
    return code is not None and Path(code.co_filename).resolve() == Path(train_file).resolve()


def run_folder(launcher, job: "Job") -> str:
    """Where a job of cats_model.train keeps its files: its run in the outputs folder (backend=local), or on the
    outputs volume as the container names it (as a finished job's metrics do)."""
    if launcher.backend == "local":
        return str(run_dir(Path(job.config.paths.log_dir), job.run_name))
    from cats_model.cloud.settings import load_settings

    return str(run_dir(PurePosixPath(load_settings().volume("outputs")[1]), job.run_name))


# ------------------------------------------------------------------------------------------- cats_model.train


def run_train_calls(launcher, jobs: list[Job], sweep_dir: Path) -> tuple[list[JobReturn], Callable]:
    """One call of the Modal `train` function per job: all submitted first, then followed to their ends.

    On Modal every job is submitted (spawned) before any result is awaited, `hydra.launcher.max_parallel` run at
    once (`max_containers`), and Modal retries them: a closed terminal stops none of them under `modal run
    --detach` (or hydra.launcher.detach=true). A job already finished with the same overrides in this sweep
    folder is not run again.
    """
    from cats_model.cloud.calls import LocalCalls, ModalCalls, follow, load_modal_app
    from cats_model.cloud.overrides import split_launch
    from cats_model.cloud.run_config import compose_run, read_config
    from cats_model.cloud.settings import load_settings

    settings = load_settings()
    sweep = sweep_name(sweep_dir)
    plans = {}
    for job in jobs:
        # The config each job's call trains, composed as a single run's is (the container's presets in) and checked;
        # Hydra's composition of the job keeps its own node (the job's folder, overrides and number), and the job's
        # folder records the config that was sent.
        config, call = compose_run(
            job.overrides, settings, max_containers=launcher.max_parallel, sweep=sweep, job=job.idx
        )
        # Unresolved: its values resolve in the container. Its Hydra settings are the job's own.
        sent = OmegaConf.to_container(read_config(config), resolve=False)
        sent.pop("hydra", None)
        with open_dict(job.config):
            for key, value in {**sent, "run_name": job.run_name}.items():
                job.config[key] = value
        plans[job.idx] = (config, split_launch(job.overrides)[0], call)
    if launcher.backend == "modal":
        calls = ModalCalls(
            load_modal_app(),
            detach=launcher.detach,
            without_modal="try the sweep on this machine with hydra.launcher.backend=local",
        )
    else:
        paths = jobs[0].config.paths  # the local folders the mounts stand for
        calls = LocalCalls(launcher.max_parallel, Path(paths.data_dir), Path(paths.log_dir))

    results = {job.idx: finished_earlier(job) for job in jobs}
    todo = [job for job in jobs if results[job.idx] is None]
    if len(todo) < len(jobs):
        print(
            f"sweep {sweep}: {len(jobs) - len(todo)} of {count_jobs(len(jobs))} finished earlier with the same overrides "
            "in this sweep folder; their results are reused",
            flush=True,
        )
    if todo:
        with calls.running():
            announce(launcher, todo)
            calls.prepare_data([plans[job.idx][0] for job in todo])  # made once, before any job starts
            ids = {}
            for job in todo:
                config, overrides, call = plans[job.idx]
                ids[job.idx] = calls.submit(config, overrides, job.run_name, call)
            print(
                f"sweep {sweep}: {count_jobs(len(todo))} submitted; its table at any time: "
                f"python -m cats_model.cloud summary {sweep}",
                flush=True,
            )
            for job in todo:
                try:
                    results[job.idx] = follow(calls, ids[job.idx])
                except Exception as err:  # one failing job never stops the others
                    results[job.idx] = err

    # Hydra's own run_job then gives each job its folder, saved config, callbacks and JobReturn.
    metric = OmegaConf.select(launcher.config, "optimized_metric")
    returns = [
        run_job(
            hydra_context=launcher.hydra_context,
            task_function=_replay(results[job.idx], metric),
            config=job.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        for job in jobs
    ]

    def cost(metrics: dict) -> float | None:
        if launcher.backend != "modal" or not metrics.get("container_s"):
            return None
        return settings.cost(metrics["container_s"], metrics.get("gpu"))

    return returns, cost


def finished_earlier(job: Job) -> dict | None:
    """This job's result from an earlier run of the same sweep with the same overrides, kept in its folder."""
    metrics, overrides = metrics_file(job.folder), hydra_file(job.folder, OVERRIDES_FILE)
    if not (metrics.is_file() and overrides.is_file()):
        return None
    if OmegaConf.to_container(OmegaConf.load(overrides)) != job.overrides:
        return None
    result = json.loads(metrics.read_text())
    return None if "error" in result else result


def _replay(result: dict | BaseException, metric: str | None) -> Callable[[DictConfig], object]:
    """A task function that reports a finished call as if the job had run here."""

    def task(cfg: DictConfig):
        if isinstance(result, BaseException):  # one line after the table, not a traceback
            raise JobFailed(" ".join(str(result).split())) from result
        if "error" in result:
            raise UserError(result["error"])
        out = Path(HydraConfig.get().runtime.output_dir)
        atomic_write_text(metrics_file(out), json.dumps(result, indent=2) + "\n")
        return result.get(metric) if metric else None

    return task


# ------------------------------------------------------------------------------------------------ other apps


def run_task_in_processes(launcher, jobs: list[Job]) -> list[JobReturn]:
    """Each job's task function in a fresh process, given its pickled payload."""
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
        return cloudpickle.loads(in_fresh_process(execute_payload, payload))
    except BaseException as err:  # its process ended without a result (ProcessDied), or raised
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


def _failed(job: Job, err: BaseException) -> JobReturn:
    ret = JobReturn(overrides=job.overrides, cfg=job.config, hydra_cfg=job.config, status=JobStatus.FAILED)
    ret.return_value = err
    return ret
