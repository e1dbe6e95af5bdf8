"""The table of a sweep: one row per job, the best marked; printed, and saved as CSV and JSON.

Built at the end of a sweep from its jobs' returns, or later from the outputs volume, where each job's run keeps
its record and its metrics (cats_model.run_layout): a sweep whose terminal was closed can still be summed up.
"""

import csv
import glob
import io
import json
from collections.abc import Callable
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from cats_model.atomic import atomic_write_text
from cats_model.errors import UserError
from cats_model.run_layout import (
    METRICS_FILE,
    RECORD_FILE,
    SUMMARY_CSV,
    SUMMARY_JSON,
    metrics_file,
    run_dir,
    sweep_job,
    sweep_name,
)

COLUMNS = (
    "job",
    "overrides",
    "status",
    "val/acc_best",
    "test/acc",
    "duration_s",
    "cost_usd",
    "best",
    "run_dir",
    "error",
)


def row(job: int, overrides: list[str], status: str, metrics: dict, cost_usd, run_dir, error: str) -> dict:
    # A run's seconds: those of all its Modal calls when it ran on Modal, else its training's wall time.
    duration = metrics.get("container_s") or metrics.get("wall_time_s")
    return {
        "job": job,
        "overrides": " ".join(overrides),
        "status": status,
        "val/acc_best": metrics.get("val/acc_best"),
        "test/acc": metrics.get("test/acc"),
        "duration_s": duration,
        "cost_usd": round(cost_usd, 4) if cost_usd is not None else None,
        "best": False,
        "run_dir": str(run_dir) if run_dir else None,
        "error": " ".join(str(error or "").split()),
    }


class JobFailed(CompactHydraException):
    """A failed job, as the sweep's end reports it: its one line (Hydra prints a compact exception's message,
    where it would print any other's traceback after the table)."""


def count_jobs(count: int) -> str:
    return f"{count} job{'' if count == 1 else 's'}"


def failed_jobs(rows: list[dict]) -> UserError | None:
    """The line that ends a sweep with failed jobs, below the table whose lines say why; None if none failed."""
    failed = [r for r in rows if r["status"] != "completed"]
    if not failed:
        return None
    return UserError(f"{len(failed)} of {count_jobs(len(rows))} failed: the lines below the table say why")


def summary_row(
    idx: int,
    overrides: list[str],
    ret: JobReturn,
    cost: Callable[[dict], float | None],
    run_dir: str | None = None,
) -> dict:
    """A job's row from its JobReturn and the metrics in its job folder. `run_dir`: where the job's run keeps
    its files, when the launcher knows (its run folder, also for a job that failed before writing its metrics);
    else its job folder."""
    out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None, throw_on_missing=False)
    failed = ret.status != JobStatus.COMPLETED
    # A failed job's folder may still hold an earlier run's metrics: read metrics of completed jobs only.
    written = metrics_file(Path(out)) if out and not failed else None
    metrics = json.loads(written.read_text()) if written and written.is_file() else {}
    status = "failed" if failed else "completed"
    error = ret._return_value if failed else ""
    return row(
        idx,
        overrides,
        status,
        metrics,
        cost(metrics) if metrics else None,
        metrics.get("run_dir") or run_dir or out,
        error,
    )


def volume_rows(files: dict[str, bytes], sweep: str, cost: Callable[[dict], float | None]) -> list[dict]:
    """A sweep's rows from the outputs volume: one per job whose run has started (`<sweep>-<job>` with a record).
    `files`: the runs' records and metrics, by path under the runs folder (`<run>/<record file>`)."""
    rows = []
    for path, data in files.items():
        run, _, name = path.partition("/")
        job = sweep_job(sweep, run)
        if job is None or name != RECORD_FILE:
            continue
        record = json.loads(data)
        completed = record["status"] == "completed" and f"{run}/{METRICS_FILE}" in files
        metrics = json.loads(files[f"{run}/{METRICS_FILE}"]) if completed else {}
        rows.append(
            row(job, record["overrides"], record["status"], {**record, **metrics}, cost(record),
                run_dir(Path(), run).as_posix(), record.get("error"))
        )  # fmt: skip
    return mark_best(sorted(rows, key=lambda r: r["job"]))


def mark_best(rows: list[dict]) -> list[dict]:
    scored = [r for r in rows if r["val/acc_best"] is not None]
    best = max(scored, key=lambda r: r["val/acc_best"], default=None)
    for r in rows:
        r["best"] = r is best
    return rows


def write_summary(sweep_dir: Path, rows: list[dict]) -> str:
    """Mark the best job by val/acc_best, write the table as CSV and JSON, and return it as text."""
    mark_best(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / SUMMARY_CSV, buffer.getvalue())
    atomic_write_text(sweep_dir / SUMMARY_JSON, json.dumps(rows, indent=2) + "\n")
    return format_table(rows) + f"\nsummary: {sweep_dir / SUMMARY_CSV}"


def format_table(rows: list[dict]) -> str:
    """The rows as text: the overrides every job shares are said once, above the table."""

    def cell(value, column: str = "") -> str:
        if value is None:
            return "-"
        if column == "duration_s":
            return f"{value:.0f}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    overrides = [r["overrides"].split() for r in rows]
    shared = [o for o in overrides[0] if all(o in job for job in overrides)] if len(rows) > 1 else []
    shown = ("job", "overrides", "status", "val/acc_best", "test/acc", "duration_s", "cost_usd")
    table = [
        [("*" if r["best"] else " ") + cell(r["job"]), " ".join(o for o in job if o not in shared) or "-"]
        + [cell(r[c], c) for c in shown[2:]]
        for r, job in zip(rows, overrides)
    ]
    widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(shown)]
    lines = [f"every job: {' '.join(shared)}"] if shared else []
    lines += ["  ".join(c.ljust(w) for c, w in zip(shown, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in table]
    lines += [f"job {r['job']} failed: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines) + ("\n* best by val/acc_best" if any(r["best"] for r in rows) else "")


def local_rows(sweep: str, runs: Path) -> list[dict] | None:
    """The rows of a sweep run on this machine (hydra.launcher.backend=local), given its name or its folder: from
    its jobs' runs in `runs` (the outputs folder standing for the volume), as they are now; else from the table
    the sweep wrote in its folder when it ended (a sweep of another app has no runs); None when neither is here."""
    folder = Path(sweep)
    name = sweep_name(folder.absolute()) if folder.is_dir() else sweep  # the launcher names runs after it
    files = {
        str(path.relative_to(runs)): path.read_bytes()
        for kind in (RECORD_FILE, METRICS_FILE)
        for path in runs.glob(f"{glob.escape(name)}-*/{kind}")
    }
    rows = volume_rows(files, name, lambda record: None)
    if not rows and (folder / SUMMARY_JSON).is_file():
        rows = json.loads((folder / SUMMARY_JSON).read_text())
    return rows or None
