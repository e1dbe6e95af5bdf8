"""Pictures of a finished run: the test confusion matrix, per-class accuracy, and the training curves."""

import csv
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (servers, containers)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cats_model.atomic import atomic_path  # noqa: E402

log = logging.getLogger(__name__)


def _save(figure, path: Path) -> str:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return str(path)


def confusion_matrix_png(path: Path, class_names: list[str], confusion: list[list[int]]) -> str:
    n = len(class_names)
    figure, axes = plt.subplots(figsize=(2 + 0.55 * n, 1.5 + 0.5 * n))
    image = axes.imshow(confusion, cmap="Blues")
    # Names are text, never mathtext: a folder named `$\foo{$ tabby` would make matplotlib raise.
    axes.set_xticks(range(n), class_names, rotation=60, ha="right", parse_math=False)
    axes.set_yticks(range(n), class_names, parse_math=False)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("test confusion matrix")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if count:
                axes.text(
                    j,
                    i,
                    count,
                    ha="center",
                    va="center",
                    color="white" if count > peak / 2 else "black",
                    fontsize=8,
                )
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def per_class_csv(path: Path, class_names: list[str], confusion: list[list[int]]) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:  # quoted: names may hold commas
        writer = csv.writer(file)
        writer.writerow(["class", "accuracy", "correct", "support"])
        for i, (name, row) in enumerate(zip(class_names, confusion)):
            support = sum(row)
            writer.writerow([name, f"{row[i] / support if support else 0:.4f}", row[i], support])
    return str(path)


def epoch_curves(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """{metric: {epoch: value}} of the training curves in the CSV log (a resumed run's rows included), the epochs
    counted from 1 as in the log and checkpoint names (the CSV counts from 0), `train/loss_epoch` named
    `train/loss` as in the log."""
    per_epoch: dict[str, dict[int, float]] = {}
    with open(metrics_csv, newline="") as file:
        for row in csv.DictReader(file):
            for key in ("train/loss_epoch", "val/loss", "train/acc", "val/acc"):
                if row.get(key) and row.get("epoch"):
                    epoch = int(float(row["epoch"])) + 1
                    per_epoch.setdefault(key.removesuffix("_epoch"), {})[epoch] = float(row[key])
    return per_epoch


def training_curves_png(path: Path, metrics_csv: Path) -> str | None:
    """Loss and accuracy per epoch from the CSV log; None without a log."""
    if not metrics_csv.is_file():
        return None
    per_epoch = epoch_curves(metrics_csv)
    if not per_epoch:
        return None
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axes, keys, title in (
        (loss, ("train/loss", "val/loss"), "loss"),
        (accuracy, ("train/acc", "val/acc"), "accuracy"),
    ):
        for key in keys:
            if key in per_epoch:
                epochs = sorted(per_epoch[key])
                axes.plot(epochs, [per_epoch[key][e] for e in epochs], marker="o", label=key)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
    return _save(figure, path)


def write_run_plots(
    run_dir: Path, class_names: list[str], test_report: dict, metrics_csv: Path | None
) -> dict:
    """All pictures a run can have; returns {name: path} for metrics.json. `metrics_csv`: the CSV logger's
    file, where the training curves come from (None: the run had no CSV logger)."""
    plots = {}
    if test_report.get("confusion_matrix"):
        confusion = test_report["confusion_matrix"]
        plots["confusion_matrix"] = confusion_matrix_png(
            run_dir / "confusion_matrix.png", class_names, confusion
        )
        plots["per_class_accuracy"] = per_class_csv(
            run_dir / "per_class_accuracy.csv", class_names, confusion
        )
    if metrics_csv is None:
        log.info(
            "no training curves: they are drawn from the CSV log, and this run has no CSV logger (logger=csv)"
        )
        return plots
    curves = training_curves_png(run_dir / "training_curves.png", metrics_csv)
    if curves:
        plots["training_curves"] = curves
    return plots
