"""Classify photos: `python -m cats_model.predict MODEL PATH... [--top-k 3] [--json]`.

MODEL is a checkpoint (`.ckpt`) or an exported `.onnx` with its sidecar JSON beside it.
"""

import argparse
import json
import sys

from cats_model.cat_or_not import verdict
from cats_model.data.images import image_files
from cats_model.errors import UserError, exit_on_user_error
from cats_model.inference import Model, check_top_k, load_model, printable, read_images, top_k
from cats_model.validation import TOP_K


def predict_files(model: Model, files: list[str], k: int = TOP_K, batch_size: int = 32) -> list[dict]:
    """One row per file, in order: {"path", "predictions": [{"label", "probability"}...]} or {"path", "error"};
    a model with a cat-or-not head adds "is_cat" and "cat_probability" to each prediction row."""
    rows = {}
    for start in range(0, len(files), batch_size):
        read, batch, errors = read_images(files[start : start + batch_size], model.info)
        rows.update({path: {"path": path, "error": reason} for path, reason in errors.items()})
        if batch is not None:
            breeds, cats = model.answers(batch)
            for i, (path, guesses) in enumerate(zip(read, top_k(breeds, model.info.class_names, k))):
                rows[path] = {"path": path, "predictions": guesses}
                if cats is not None:
                    rows[path].update(verdict(cats[i], model.info.cat_threshold))
    return [rows[path] for path in files]


def predict(
    model_path: str, paths: list[str], k: int = TOP_K, batch_size: int = 32, device=None
) -> list[dict]:
    check_top_k(k)  # before the model is loaded: a wrong argument fails at once
    if batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {batch_size}")
    return predict_files(load_model(model_path, device), image_files(paths), k, batch_size)


def format_table(rows: list[dict]) -> str:
    """Plain text for a terminal: names and paths with their control characters escaped."""
    paths = [printable(r["path"]) for r in rows]
    width = max(map(len, paths), default=4)
    lines = []
    for path, row in zip(paths, rows):
        if "error" in row:
            lines.append(f"{path:<{width}}  {row['error']}")
        elif row.get("is_cat") is False:  # the breeds are in --json, for whoever wants them anyway
            lines.append(f"{path:<{width}}  not a cat (p={row['cat_probability']:.2f})")
        else:
            guesses = "  ".join(f"{printable(p['label'])} {p['probability']:.3f}" for p in row["predictions"])
            lines.append(f"{path:<{width}}  {guesses}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cats_model.predict", description=__doc__.split(":")[0])
    parser.add_argument(
        "model", help="a .ckpt written by training, or an exported .onnx (its .json beside it)"
    )
    parser.add_argument("paths", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=int, default=TOP_K, help="classes shown per image (1 or more)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="auto (default: a GPU when there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        rows = predict(args.model, args.paths, args.top_k, args.batch_size, args.device)
        if not rows:
            raise UserError(f"no images found in {printable(' '.join(args.paths))}")
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    if all("error" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
