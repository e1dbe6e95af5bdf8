"""The table at the end of a sweep: one row per job, the best marked; printed and saved as CSV and JSON."""

import csv
import io
import json
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from cats_model.atomic import atomic_write_text

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


def summary_row(idx: int, overrides: list[str], ret: JobReturn, hourly_price: float) -> dict:
    out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None, throw_on_missing=False)
    failed = ret.status != JobStatus.COMPLETED
    # A failed job's folder may still hold an earlier run's metrics.json: read metrics of completed jobs only.
    metrics_file = Path(out) / "metrics.json" if out and not failed else None
    metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.is_file() else {}
    duration = metrics.get("wall_time_s")
    return {
        "job": idx,
        "overrides": " ".join(overrides),
        "status": "failed" if failed else "completed",
        "val/acc_best": metrics.get("val/acc_best"),
        "test/acc": metrics.get("test/acc"),
        "duration_s": duration,
        "cost_usd": round(duration / 3600 * hourly_price, 4) if duration else None,
        "best": False,
        "run_dir": metrics.get("run_dir") or out,
        "error": " ".join(str(ret._return_value).split()) if failed else "",
    }


def write_summary(sweep_dir: Path, rows: list[dict]) -> str:
    """Mark the best job by val/acc_best, write summary.csv and summary.json, and return the table as text."""
    scored = [r for r in rows if r["val/acc_best"] is not None]
    best = max(scored, key=lambda r: r["val/acc_best"], default=None)
    for row in rows:
        row["best"] = row is best
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "summary.csv", buffer.getvalue())
    atomic_write_text(sweep_dir / "summary.json", json.dumps(rows, indent=2) + "\n")
    return format_table(rows) + f"\nsummary: {sweep_dir / 'summary.csv'}"


def format_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    shown = ("job", "overrides", "status", "val/acc_best", "test/acc", "duration_s", "cost_usd")
    table = [
        [("*" if r["best"] else " ") + cell(r[c]) if c == "job" else cell(r[c]) for c in shown] for r in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(shown)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(shown, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in table]
    lines += [f"job {r['job']} failed: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines) + ("\n* best by val/acc_best" if any(r["best"] for r in rows) else "")
