"""Classify photos with a checkpoint: `python -m cats_model.predict CKPT PATH... [--top-k 3] [--json]`."""

import argparse
import json
import sys
from pathlib import Path

import torch

from cats_model.checkpoint import best_device, load_classifier
from cats_model.data.datamodule import IMAGE_EXTENSIONS
from cats_model.data.images import load_rgb
from cats_model.data.transforms import eval_transform
from cats_model.errors import UserError, exit_on_user_error


def image_files(paths: list[str]) -> list[str]:
    """Files as given, and the images inside folders (recursively, sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(str(path))
    return files


def predict(
    checkpoint: str, paths: list[str], top_k: int = 3, batch_size: int = 32, device=None
) -> list[dict]:
    """One row per file: {"path", "predictions": [{"class", "probability"}...]} or {"path", "error"}."""
    device = torch.device(device) if device else best_device()
    model = load_classifier(checkpoint, device)
    names = model.class_names
    transform = eval_transform(model.hparams.image_size, model.hparams.mean, model.hparams.std)
    top_k = min(top_k, len(names))
    rows: list[dict] = []
    files = image_files(paths)
    for start in range(0, len(files), batch_size):
        batch, tensors = [], []
        for path in files[start : start + batch_size]:
            try:
                tensors.append(transform(load_rgb(path, min_side=2 * model.hparams.image_size)))
                batch.append({"path": path})
            except Exception as err:  # unreadable or missing: reported, the others still predicted
                rows.append({"path": path, "error": f"{type(err).__name__}: {err}"})
        if not tensors:
            continue
        with torch.inference_mode():
            probabilities = model(torch.stack(tensors).to(device)).float().softmax(dim=1)
        values, indices = probabilities.topk(top_k, dim=1)
        for row, top_values, top_indices in zip(batch, values.tolist(), indices.tolist()):
            row["predictions"] = [
                {"class": names[i], "probability": p} for p, i in zip(top_values, top_indices)
            ]
            rows.append(row)
    order = {path: i for i, path in enumerate(files)}
    return sorted(rows, key=lambda row: order[row["path"]])


def format_table(rows: list[dict]) -> str:
    width = max((len(r["path"]) for r in rows), default=4)
    lines = []
    for row in rows:
        if "error" in row:
            lines.append(f"{row['path']:<{width}}  unreadable: {row['error']}")
        else:
            guesses = "  ".join(f"{p['class']} {p['probability']:.3f}" for p in row["predictions"])
            lines.append(f"{row['path']:<{width}}  {guesses}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cats_model.predict", description=__doc__.split(":")[0])
    parser.add_argument("checkpoint", help="a .ckpt written by training (best-*.ckpt or last.ckpt)")
    parser.add_argument("paths", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when there is one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with exit_on_user_error(exit_code=1):
        rows = predict(args.checkpoint, args.paths, args.top_k, args.batch_size, args.device)
        if not rows:
            raise UserError(f"no images found in {' '.join(args.paths)}")
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    if all("error" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
