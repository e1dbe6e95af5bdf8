"""Serve a model: `python -m cats_model.serve MODEL [--host 127.0.0.1] [--port 8000] [--device auto]`.

MODEL is a checkpoint (`.ckpt`) or an exported `.onnx` with its sidecar JSON. The page is at `/`, the JSON API
at `POST /predict`, `GET /model` and `GET /health`.
"""

import argparse
import os

from cats_model.errors import UserError, exit_on_user_error
from cats_model.inference import load_model
from cats_model.serve.app import create_app, model_threads
from cats_model.serve.http import SHUTDOWN_S, http_server, listening_socket
from cats_model.serve.options import DEFAULTS, ServeOptions
from cats_model.serve.token import TOKEN_ENV
from cats_model.validation import Range

SHUTDOWN_GRACE_ALLOWED = Range(0, 3600)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cats_model.serve", description=__doc__.split("\n")[0])
    parser.add_argument(
        "model", help="a .ckpt written by training, or an exported .onnx (its .json beside it)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to be reachable from other machines")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for the model (default: all but one of the CPUs this process may use)",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULTS.max_batch_size, help="images per forward pass"
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=DEFAULTS.max_wait_ms, help="how long a batch waits to fill"
    )
    parser.add_argument("--max-files", type=int, default=DEFAULTS.max_files, help="images per request")
    parser.add_argument("--max-megabytes", type=float, default=DEFAULTS.max_megabytes, help="MiB per request")
    parser.add_argument(
        "--max-megapixels", type=float, default=DEFAULTS.max_megapixels, help="decoded pixels per request"
    )
    parser.add_argument(
        "--idle-timeout-s",
        type=float,
        default=DEFAULTS.idle_timeout_s,
        help="drop a request whose head or body stops arriving for this long",
    )
    parser.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=SHUTDOWN_S,
        help="on SIGTERM, how long requests under way get to finish",
    )
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> ServeOptions:
    """The options, each checked finite and in its range (ServeOptions checks its own)."""
    if args.threads is not None and not 0 < args.threads <= 1024:
        raise UserError(f"--threads must be 1 to 1024, got {args.threads}")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1 to 65535, got {args.port}")
    if args.shutdown_grace_s not in SHUTDOWN_GRACE_ALLOWED:
        raise UserError(f"--shutdown-grace-s must be {SHUTDOWN_GRACE_ALLOWED}, got {args.shutdown_grace_s}")
    return ServeOptions(
        args.max_batch_size,
        args.max_wait_ms,
        args.max_files,
        args.max_megabytes,
        args.max_megapixels,
        idle_timeout_s=args.idle_timeout_s,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        options = options_from(args)
        app = create_app(load_model(args.model, args.device, args.threads or model_threads()), options)
        listening = listening_socket(args.host, args.port)  # a port in use: one line, before "serving ... at"
    needs = f" (send the token of {TOKEN_ENV})" if os.environ.get(TOKEN_ENV) else ""
    print(f"serving {args.model} at http://{args.host}:{args.port}/{needs}", flush=True)
    http_server(app, options.idle_timeout_s, args.shutdown_grace_s).run(sockets=[listening])


if __name__ == "__main__":
    main()
