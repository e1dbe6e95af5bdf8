"""The server under load: `python -m cats_model.bench serve MODEL [--requests 64] [--clients 16]`.

Starts `python -m cats_model.serve MODEL` on loopback and sends the same photos, one per request, twice over in
turns: one request at a time, then `--clients` at once (`--requests` in all); images/s and latency p50/p99 of
each, side by side, and the mean batch the server formed (from /health).
"""

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from cats_model.bench.table import markdown_table
from cats_model.data.images import image_files
from cats_model.errors import UserError, exit_on_user_error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: str | Path, *options: str, timeout: float = 120.0):
    """`python -m cats_model.serve MODEL` on a free loopback port until the block ends; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "cats_model.serve", str(model), "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise UserError(
                    f"the server exited with {process.returncode}: {process.stdout.read()[-500:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise UserError(f"the server did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def multipart_body(name: str, data: bytes) -> tuple[bytes, str]:
    """(body, content type) of a request holding one file."""
    request = httpx.Request("POST", "http://x/predict", files={"file": (name, data)})
    return request.read(), request.headers["content-type"]


def multipart(path: str) -> tuple[bytes, str]:
    """One photo as a multipart body (built once, so that the clients measure the server, not encoding)."""
    return multipart_body(Path(path).name, Path(path).read_bytes())


def send(url: str, bodies: list[tuple[bytes, str]], clients: int) -> dict:
    """POST each body to /predict from `clients` threads at once, each on its own keep-alive connection (plain
    http.client: the load generator shares the machine's CPUs with the server, so it should cost little)."""
    address = urlsplit(url)
    local, connections = threading.local(), []

    def post(body: tuple[bytes, str]):
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
            connections.append(local.connection)
        start = time.perf_counter()
        local.connection.request("POST", "/predict", body=body[0], headers={"content-type": body[1]})
        response = local.connection.getresponse()
        answer = json.loads(response.read())
        return response.status, answer, time.perf_counter() - start

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(post, bodies))
    seconds = time.perf_counter() - started
    for connection in connections:
        connection.close()
    latencies = np.array([latency for _, _, latency in answers]) * 1000
    return {
        "answers": [(status, answer) for status, answer, _ in answers],
        "images_per_sec": len(bodies) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }


def batches(url: str) -> tuple[int, int]:
    health = httpx.get(f"{url}/health").json()
    return health["batches"], health["images"]


def bench_serving(url: str, photos: list[str], requests: int, clients: int, rounds: int) -> dict:
    bodies = [multipart(photos[i % len(photos)]) for i in range(requests)]
    send(url, bodies[: min(8, requests)], clients)  # warm-up: first calls, allocator growth
    runs = {"one at a time": [], f"{clients} clients": []}
    for _ in range(rounds):  # in turns, so that a slow spell of the machine hits both
        for name, count in (("one at a time", 1), (f"{clients} clients", clients)):
            before = batches(url)
            result = send(url, bodies, count)
            after = batches(url)
            result["mean_batch"] = (after[1] - before[1]) / max(1, after[0] - before[0])
            result["failed"] = sum(status != 200 for status, _ in result.pop("answers"))
            runs[name].append(result)
    summary = {}
    for name, results in runs.items():
        summary[name] = {key: float(np.median([r[key] for r in results])) for key in results[0]}
    sequential, concurrent = summary.values()
    return {"requests": requests, "clients": clients, "rounds": rounds, "runs": summary,
            "speedup": concurrent["images_per_sec"] / sequential["images_per_sec"]}  # fmt: skip


def format_results(results: dict) -> str:
    heading = (
        f"{results['requests']} requests of one photo each, medians of {results['rounds']} rounds; "
        f"speedup {results['speedup']:.2f}x"
    )
    rows = [
        [
            name,
            f"{r['images_per_sec']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['mean_batch']:.1f}",
            f"{r['failed']:.0f}",
        ]
        for name, r in results["runs"].items()
    ]
    header = ["clients", "images/s", "p50 ms", "p99 ms", "mean batch", "failed"]
    return "\n".join([heading, *markdown_table(header, rows)])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m cats_model.bench serve", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", type=Path, help="a checkpoint or an exported .onnx")
    parser.add_argument(
        "--images", type=Path, help="a folder of photos to send (default: the synthetic set's)"
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--server-args", default="", help="extra arguments for cats_model.serve, e.g. '--max-wait-ms 5'"
    )
    parser.add_argument("--json", type=Path, default=Path("bench-serve.json"))
    args = parser.parse_args(argv)
    with exit_on_user_error():
        photos = image_files([args.images or default_photos()])[:64]
        if not photos:
            raise UserError(f"no photos in {args.images}")
        with running_server(args.model, *args.server_args.split()) as url:
            results = bench_serving(url, photos, args.requests, args.clients, args.rounds)
    results["model"] = str(args.model)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    return results


def default_photos() -> Path:
    """Photo-sized JPEGs of the synthetic Oxford layout (made once, as the training bench makes them)."""
    from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
    from cats_model.paths import configured_path

    spec = SyntheticSpec(trainval_per_class=4, test_per_class=2, dog_breeds=0, min_size=300, max_size=500)
    root = configured_path("data_dir") / "synthetic-pet-serve-bench"
    return ensure_synthetic(root, spec) / "images"
