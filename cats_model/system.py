"""Facts about the machine a run is on."""

import os
from pathlib import Path

# A Modal function's CPU request (modal.yml): Modal may show a container more cores than it requested, and bills
# what it uses; thread pools and DataLoader workers are sized to the request.
CPUS_ENV = "CATS_MODEL_CPUS"


def in_container() -> bool:
    """Whether this process runs in a Modal container (modal.is_local() is also True in child processes of a
    container; this variable is not)."""
    return os.environ.get("MODAL_IS_REMOTE") == "1"


def available_cpus() -> int:
    """CPUs this process may really use: the cgroup quota (containers), the affinity mask or the CPU request of
    the Modal function (CATS_MODEL_CPUS), whichever is least."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    if requested := os.environ.get(CPUS_ENV):
        count = min(count, max(1, int(float(requested))))
    return max(1, count)


def cpu_share_env(parts: int) -> dict[str, str]:
    """The environment that gives a process, and every process it starts, one of `parts` equal shares of the CPUs
    this one may use, as a container gets its CPU request: CATS_MODEL_CPUS for loader workers and thread pools,
    OMP_NUM_THREADS for PyTorch's threads (more threads than cores only spin)."""
    share = str(max(1, available_cpus() // parts))
    return {CPUS_ENV: share, "OMP_NUM_THREADS": share}


def use_available_cpus(processes: int = 1) -> int:
    """PyTorch's CPU threads for one of `processes` training processes (DDP ranks): at most its share of the CPUs
    this process may use, unless OMP_NUM_THREADS says; returns the count. PyTorch alone takes one per physical
    core of the machine, and Lightning's DDP launcher divides the cores in sight, however few of them a
    container's CPU request allows: the threads past it only spin (two quick starts at once on 2 cores took 94 s
    each with PyTorch's 2 threads each, 26 s with 1). Exported as OMP_NUM_THREADS, so that the ranks Lightning
    starts inherit it and its own rule stands aside."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, min(torch.get_num_threads(), available_cpus() // processes))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return torch.get_num_threads()


def default_num_workers() -> int:
    # One core stays with the training process; more than 8 decoders rarely helps a single GPU.
    return min(8, max(0, available_cpus() - 1))


# torch is imported inside the functions below: the Modal side reads this module (CPUS_ENV) without it.


def uses_cuda(accelerator: str = "auto") -> bool:
    """Whether a Trainer `accelerator` (or `auto`) runs on a CUDA GPU here."""
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def default_device():
    """Where work goes when nobody says: the GPU when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if uses_cuda() else "cpu")


def auto_precision(accelerator: str = "auto") -> str:
    """What `trainer.precision=auto` means on this machine: bf16 needs Ampere or newer (compute capability 8),
    T4 and V100 get fp16 with loss scaling, the CPU full float32."""
    import torch

    if not uses_cuda(accelerator):
        return "32-true"
    return "bf16-mixed" if torch.cuda.get_device_capability()[0] >= 8 else "16-mixed"
