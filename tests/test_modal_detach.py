"""What outlives a closed terminal, shown on the offline Modal service (tests/modal_service.py): a run started
with `modal run`, with `modal run --detach`, and submitted to the deployed app (`modal deploy` then
`python -m cats_model.cloud submit`). The client is killed (SIGKILL: no goodbye) while its run trains."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import started_modal_service
from helpers import APP_FILE, REMOTE_CPU
from modal_service import CLIENT_POLL_S, modal_command

pytestmark = pytest.mark.slow
OUTPUTS = "cats-model-outputs"


@pytest.fixture
def service(tmp_path, prepared_data):
    # Clients heartbeat every second here; an ephemeral app whose client is silent for 4 s is stopped.
    service = started_modal_service(tmp_path / "modal", data=prepared_data, heartbeat_timeout_s=4)
    yield service
    service.stop()


def start_client(service, *argv: str) -> subprocess.Popen:
    env = {
        **os.environ,
        **service.env(),
        "MODAL_HEARTBEAT_INTERVAL": "1",
        "CATS_MODEL_RESULT_POLL_S": str(CLIENT_POLL_S),
    }
    return subprocess.Popen(
        [sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s")
        time.sleep(0.2)


@pytest.mark.parametrize(
    "how, outlives",
    [("modal run", False), ("modal run --detach", True), ("deployed app", True)],
)
def test_what_outlives_a_closed_terminal(service, tmp_path, how, outlives):
    gate = tmp_path / "gate"
    held = [*REMOTE_CPU, "+callbacks.gate._target_=gate.WaitForFile", f"+callbacks.gate.path={gate}",
            "+callbacks.gate.before_epoch=0", "+callbacks.gate.timeout_s=900"]  # fmt: skip
    if how == "deployed app":
        deployed = modal_command(service, "deploy", str(APP_FILE))
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        client = start_client(service, "-m", "cats_model.cloud", "submit", *held, "run_name=away")
    else:
        detach = ["--detach"] if "detach" in how else []
        client = start_client(
            service, "-m", "modal", "run", *detach, str(APP_FILE), "--", *held, "run_name=away"
        )
    record = service.volume_path(OUTPUTS) / "runs/away/launch.json"
    wait_for(lambda: record.is_file(), "the run's record on the volume")  # training has started, held
    os.killpg(client.pid, signal.SIGKILL)  # the terminal is closed
    client.wait()
    time.sleep(6)  # past the heartbeat timeout
    gate.write_text("go")
    [call] = service.calls_of("train")
    wait_for(call.done.is_set, "the call's end")
    outcome = call.history[-1][1]
    metrics = service.volume_path(OUTPUTS) / "runs/away/metrics.json"
    if outlives:
        assert outcome == "success" and json.loads(metrics.read_text())["epoch"] == 1
    else:
        assert outcome == "terminated" and not metrics.exists()
