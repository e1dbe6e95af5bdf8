import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest


def pytest_configure(config):
    """The library warnings a run silences (cats_model.noise.WARNINGS), silenced in the tests too: pytest puts its
    own filters in place around each test, which would show them again.

    Each pytest-xdist worker gets its share of the cores, as each job of a local sweep does (LocalCalls,
    cpu_share_env): its tests and every process they start size their threads and loader workers to it, also in
    the offline Modal service's containers, whose CPU request would say more. With PyTorch's
    default of all cores in every process, two workers' trainings only spin: the suite took 14 min on 2 cores,
    9.5 min with a share each. (Pinning each worker to its own core was slower, 10.3 min: a test that runs
    processes side by side, and the last tests of the run, got one core.)"""
    from cats_model.noise import WARNINGS
    from cats_model.system import cpu_share_env

    for message, category, module in WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        os.environ.update(cpu_share_env(workers))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in-process tests


def pytest_collection_modifyitems(items):
    """The order pytest-xdist hands out whole modules in (`--dist loadscope --no-loadscope-reorder`, pyproject):
    the first module that reads the shared quick-start model (quick_start) first, so that one worker trains it
    while the other starts on a module that does not wait for it (both waiting on it cost some 12 s); then the
    modules with slow tests, long units while there is work for both workers; the modules of short tests last,
    so that the workers end together. Each module's tests stay together, in their order."""
    first = next((item.module for item in items if "quick_start" in item.fixturenames), None)
    has_slow = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.module is not first, item.module not in has_slow))


# Helpers that live as long as the process that started them, by design: multiprocessing's resource tracker,
# and its fork server (tests/forked.py), whose children are counted as this process's own.
LIFELONG_HELPERS = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)


def child_processes() -> dict[int, str]:
    """{pid: command line} of the processes this one started that are still running (Linux's /proc), and of those
    its lifelong helpers started; the helpers themselves left out."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (name) state ppid ...": the name may hold spaces and parentheses, so split after the last ')'
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if state != "Z":
            table[int(stat.parent.name)] = int(ppid), command.strip()
    mine = {pid for pid, (ppid, _) in table.items() if ppid == os.getpid()}
    helpers = {pid for pid in mine if any(h in table[pid][1] for h in LIFELONG_HELPERS)}
    started = mine | {pid for pid, (ppid, _) in table.items() if ppid in helpers}
    return {pid: table[pid][1] for pid in started - helpers}


@pytest.fixture(scope="session", autouse=True)
def leaves_no_process_behind():
    """The suite ends with no process of its own still running: a server, a data loader worker or a training
    that a test left behind fails the run (and is stopped)."""
    before = set(child_processes())
    yield
    deadline = time.monotonic() + 10  # processes told to stop at a test's end may take a moment
    while (
        left := {p: n for p, n in child_processes().items() if p not in before}
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"the tests left these processes running: {left}"


@pytest.fixture
def stops_its_children():
    """For a test whose library starts a helper process that lives as long as this one (TensorBoard's data
    server): the processes started during the test are stopped at its end."""
    before = set(child_processes())
    yield
    for pid in set(child_processes()) - before:
        os.kill(pid, signal.SIGTERM)


def session_folder(tmp_path_factory) -> Path:
    """The temporary folder of the whole session: above each pytest-xdist worker's own, where they share."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory) -> Path:
    """Every test reads and writes data under one temporary directory, never the checkout's data/. The workers
    share it as the jobs of a sweep share the data volume: generated data and caches are written whole, atomically,
    one folder per synthetic spec (tests/test_shared_data.py)."""
    path = session_folder(tmp_path_factory) / "data"
    path.mkdir(exist_ok=True)
    previous = os.environ.get("CATS_MODEL_DATA_DIR")
    os.environ["CATS_MODEL_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CATS_MODEL_DATA_DIR", None)
    else:
        os.environ["CATS_MODEL_DATA_DIR"] = previous


@pytest.fixture(autouse=True, scope="module")
def torch_threads():
    """Loading a model for inference sets PyTorch's process-wide thread count: each module gets it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_hydra(hydra_restore_singletons):
    """Hydra's global state (version base, config store, resolvers) is restored after every test."""
    yield


# The README's quick start, word for word.
QUICK_START = [
    "trainer.accelerator=cpu",
    "data=synthetic",
    "model=mobilenet_v3_small",
    "model.pretrained=false",
]


def made_once(tmp_path_factory, name: str, make) -> Path:
    """`<session folder>/<name>`, made by `make(folder)` once for the whole session: the first pytest-xdist worker
    that asks makes it while the others wait on its lock, then all read it."""
    root = session_folder(tmp_path_factory)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".made").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def quick_start(tmp_path_factory, data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """(folder, finished command) of the README's quick start, typed in a folder that is not the checkout, its run
    in `<folder>/run`: a model that has learned the default synthetic data, breeds and cat-or-not (about 25 s on
    2 cores). Trained once for the session by the CLI, so that its run folder is what a user has (.hydra/config.yaml
    names its dataset). Shared: read it, never change it (copy the run folder first)."""
    from helpers import run_cli

    def train(folder: Path) -> None:
        result = run_cli(*QUICK_START, f"hydra.run.dir={folder / 'run'}", cwd=folder)
        assert result.returncode == 0, result.stderr[-2000:]
        (folder / "command.json").write_text(json.dumps([result.args, result.stdout, result.stderr]))

    folder = made_once(tmp_path_factory, "quick-start", train)
    args, stdout, stderr = json.loads((folder / "command.json").read_text())
    return folder, subprocess.CompletedProcess(args, 0, stdout, stderr)


@pytest.fixture(scope="session")
def learned_run(quick_start) -> tuple[Path, dict]:
    """(run folder, metrics) of the quick start's trained model."""
    run_dir = quick_start[0] / "run"
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def modal_app():
    """launch/modal_app.py, imported as Modal's CLI would (no Modal token needed)."""
    from cats_model.cloud.calls import load_modal_app

    return load_modal_app()


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """A data volume as `prepare_data` leaves it for the data of a remote test run (REMOTE_CPU): the synthetic
    dataset, its decoded-image cache and the record of both (cats_model.cloud.prepared). Made once; the offline
    services start with a copy, as a real data volume keeps them between runs."""
    from helpers import REMOTE_CPU, modal_run

    from cats_model.cloud.remote import prepare_data

    def prepare(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CATS_MODEL_DATA_DIR", str(folder))
            assert prepare_data([modal_run(REMOTE_CPU)[0]], commit=None)["prepared"] == 1

    return made_once(tmp_path_factory, "prepared-data", prepare)


def started_modal_service(root, data: Path | None = None, **options):
    """The offline Modal service (tests/modal_service.py), its containers importing the app files of launch/
    (and the fault callbacks of tests/); its data volume a copy of `data` (mtimes kept: the decoded-image cache
    stays valid), or empty."""
    from modal_service import ModalService

    from cats_model.cloud.settings import load_settings
    from cats_model.paths import PROJECT_ROOT

    service = ModalService(root, app_dirs=[PROJECT_ROOT / "launch", PROJECT_ROOT / "tests"], **options)
    if data is not None:
        shutil.copytree(data, service.volume_path(load_settings().volume("data")[0]), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".made"))  # fmt: skip
    return service.start()


@pytest.fixture
def modal_service(tmp_path, prepared_data):
    """A fresh service whose data volume holds the prepared data of the remote test runs (a test about preparing
    data overrides this fixture with an empty one)."""
    service = started_modal_service(tmp_path / "modal", data=prepared_data)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def module_modal_service(tmp_path_factory, prepared_data):
    """One service for a module whose tests share what its first calls made."""
    service = started_modal_service(tmp_path_factory.mktemp("modal"), data=prepared_data)
    yield service
    service.stop()


@pytest.fixture
def modal_client(modal_service, monkeypatch):
    """This process's modal client pointed at the offline service (a fresh client: the last one knew another)."""
    import modal.client
    from modal_service import CLIENT_POLL_S

    for key, value in modal_service.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CATS_MODEL_RESULT_POLL_S", str(CLIENT_POLL_S))
    monkeypatch.setattr("cats_model.cloud.calls.RESULT_POLL_S", CLIENT_POLL_S)
    modal.client._Client._set_env_client(None)
    yield modal_service
    modal.client._Client._set_env_client(None)
