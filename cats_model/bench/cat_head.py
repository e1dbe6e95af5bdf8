"""What the cat-or-not head costs the breeds: `python -m cats_model.bench cat-head [OVERRIDES...] [--json FILE]`.

Trains the same config twice in one run, side by side: with the dataset's dogs as not-cats (the two-head model
that `data=cat_breeds` and `data=synthetic` train by default) and with `data.dogs=false` (breeds only), same seed
and epochs; then compares the test split's breed accuracy and reports the two-head model's cat-or-not figures.
Without overrides: the offline synthetic data, mobilenet_v3_small from scratch, on the CPU.
"""

import argparse
import json
import tempfile
from pathlib import Path

from cats_model.bench.table import markdown_table
from cats_model.config import compose_train_config
from cats_model.errors import exit_on_user_error

DEFAULT = ["data=synthetic", "model=mobilenet_v3_small", "model.pretrained=false", "trainer=cpu"]
QUIET = ["print_config=false", "callbacks.progress_bar=null", "callbacks.model_summary=null", "logger=none"]
VARIANTS = {"breeds + cat-or-not": [], "breeds only": ["data.dogs=false"]}
KEPT = ("test/acc", "test/acc_macro", "test/cat_recall", "test/dog_rejection", "test/negative_rejection",
        "test/cat_auroc", "cat_threshold", "epoch")  # fmt: skip


def bench_cat_head(overrides: list[str], work: Path) -> dict:
    from cats_model.train import train  # Lightning and torch only once the arguments are fine

    runs = {}
    for name, extra in VARIANTS.items():
        cfg = compose_train_config([*overrides, *QUIET, *extra, "resume=false"], work / name.replace(" ", ""))
        metrics = train(cfg)
        runs[name] = {key: metrics[key] for key in KEPT if metrics.get(key) is not None}
    both, breeds = (runs[name]["test/acc"] for name in VARIANTS)
    return {"overrides": overrides, "runs": runs, "breed_accuracy_difference": both - breeds}


def format_results(results: dict) -> str:
    def percent(value):
        return "" if value is None else f"{value * 100:.1f}%"

    rows = [
        [name, percent(r["test/acc"]), percent(r["test/acc_macro"]), percent(r.get("test/cat_recall")),
         percent(r.get("test/dog_rejection")), "" if "test/cat_auroc" not in r else f"{r['test/cat_auroc']:.4f}"]
        for name, r in results["runs"].items()
    ]  # fmt: skip
    header = ["model", "breed accuracy", "macro", "cats kept", "dogs rejected", "cat AUROC"]
    difference = results["breed_accuracy_difference"] * 100
    return "\n".join(
        [
            f"test split, {' '.join(results['overrides'])}",
            *markdown_table(header, rows),
            f"breed accuracy with the cat-or-not head minus without: {difference:+.1f} points",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m cats_model.bench cat-head", description=__doc__.split("\n")[0]
    )
    parser.add_argument("overrides", nargs="*", help=f"training overrides (default: {' '.join(DEFAULT)})")
    parser.add_argument("--json", type=Path, default=Path("bench-cat-head.json"))
    args = parser.parse_args(argv)
    with exit_on_user_error(), tempfile.TemporaryDirectory() as work:
        results = bench_cat_head(args.overrides or DEFAULT, Path(work))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    return results
