"""Processes a test starts that may fork, allocate or hang: each in its own process group, killed as a group."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time

import httpx
from PIL import Image

from cats_model.bench.serving import free_port


def run_python(code: str, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -c code args` in a new session; on timeout the whole group is killed (workers included)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@contextlib.contextmanager
def serving(model, *options: str, timeout: float = 120):
    """`python -m cats_model.serve MODEL OPTIONS` on a free loopback port, in its own group: (url, process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cats_model.serve", str(model), "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    """A process's resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak_memory(pid: int) -> None:
    """Start a process's peak resident memory (VmHWM) over from what it holds now (Linux 4.0 and later)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def png(width: int, height: int) -> bytes:
    """A one-colour PNG: a few hundred bytes to a few hundred kB, whatever its pixel count."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()
