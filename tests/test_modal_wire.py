"""`modal run launch/modal_app.py -- ...` through the real modal client against the offline Modal service
(tests/modal_service.py): calls held running across many polls, timed out, expired, crashed, preempted."""

import json
import threading
import time

import pytest
from helpers import APP_FILE, REMOTE_CPU
from modal_service import CLIENT_POLL_S, Attempt, modal_command, modal_in_process

from cats_model.cloud.settings import load_settings

OUTPUTS = "cats-model-outputs"
pytestmark = pytest.mark.slow


def run(service, *overrides: str, timeout: float = 600, client=modal_in_process):
    """`modal run launch/modal_app.py -- OVERRIDES`; `client=modal_command` for a client process of its own."""
    return client(service, "run", str(APP_FILE), "--", *REMOTE_CPU, *overrides, timeout=timeout)


def run_apart(service, *overrides: str):
    """The same, in a process of its own: for a second client beside the first."""
    return run(service, *overrides, client=modal_command)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def in_background(function, *args):
    """Runs function(*args) in a thread; returns a callable that joins it and gives its result."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=function(*args)), daemon=True)
    thread.start()

    def result():
        thread.join(600)
        return box["result"]

    return result


def test_a_call_that_times_out_on_every_attempt_ends_in_one_line(modal_service):
    attempts = load_settings().train["retries"]["max_retries"] + 1
    modal_service.script("train", *[Attempt(timeout=True)] * attempts)
    result = run(modal_service, "run_name=late", timeout=300)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "reached its Modal timeout on every attempt" in line and "run_name" in line
    [call] = modal_service.calls_of("train")
    assert [outcome for _, outcome in call.history] == ["timeout"] * attempts
    assert modal_service.requests.count("FunctionGetOutputs") < 50  # a few polls, not a loop at full speed


def test_an_expired_result_ends_in_one_line_pointing_at_the_volume(modal_service):
    modal_service.script("train", Attempt(hold_s=60))
    finished = in_background(run, modal_service, "run_name=gone")
    deadline = time.time() + 120
    while not modal_service.calls_of("train") and time.time() < deadline:
        time.sleep(0.1)
    [call] = modal_service.calls_of("train")
    time.sleep(1.5)  # polled a few times while running
    modal_service.expire(call.call_id)
    result = finished()
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "has expired on Modal" in line and "outputs volume" in line


def test_a_crash_on_every_attempt_is_retried_then_one_line(modal_service):
    retries = load_settings().train["retries"]["max_retries"]
    # The attempts before the last fail as a crashed container does (a remote exception); the last one crashes
    # for real in its training process, and its line is the one the user gets.
    modal_service.script(
        "train", *[Attempt(exception="training of run crash failed: an earlier crash")] * retries
    )
    result = run(modal_service, "run_name=crash", "+callbacks.crash._target_=faults.CrashAtFitStart")
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "run crash failed" in line and "injected crash at fit start" in line
    [call] = modal_service.calls_of("train")
    assert [outcome for _, outcome in call.history] == ["failure"] * (retries + 1)


def test_a_preempted_call_resumes_from_its_committed_checkpoint(modal_service, tmp_path):
    gate = tmp_path / "gate"
    modal_service.script("train", Attempt(preempt_when_committed=f"{OUTPUTS}/runs/pre/checkpoints/last.ckpt"))
    finished = in_background(
        run, modal_service, "run_name=pre", "trainer.max_epochs=2",
        "+callbacks.gate._target_=gate.WaitForFile", f"+callbacks.gate.path={gate}", "+callbacks.gate.before_epoch=1",
        "+callbacks.gate.timeout_s=900",
    )  # fmt: skip
    deadline = time.time() + 300
    while not any(c.preemptions for c in modal_service.calls_of("train")) and time.time() < deadline:
        time.sleep(0.2)
    gate.write_text("go")  # the retry may pass the second epoch's start
    result = finished()
    assert result.returncode == 0, result.stderr[-3000:]
    [call] = modal_service.calls_of("train")
    assert [outcome for _, outcome in call.history] == ["preempted", "success"]
    second = (modal_service.containers[-1].folder / "log.txt").read_text()
    assert "last.ckpt" in second  # the retry restored the committed checkpoint
    metrics = json.loads((modal_service.volume_path(OUTPUTS) / "runs/pre/metrics.json").read_text())
    assert metrics["epoch"] == 2


def test_a_run_held_running_is_waited_for_and_one_submitted_again_is_followed_not_trained_twice(
    modal_service, tmp_path
):
    gate = tmp_path / "gate"
    held = [
        "+callbacks.gate._target_=gate.WaitForFile",
        f"+callbacks.gate.path={gate}",
        "+callbacks.gate.before_epoch=0",
        "+callbacks.gate.timeout_s=900",
    ]
    first = in_background(run, modal_service, "run_name=twice", *held)
    record = modal_service.volume_path(OUTPUTS) / "runs/twice/launch.json"
    deadline = time.time() + 300
    while (
        not (record.is_file() and json.loads(record.read_text())["status"] == "running")
        and time.time() < deadline
    ):
        time.sleep(0.2)
    second = in_background(run_apart, modal_service, "run_name=twice", *held)
    # The second client asked for the running call's state: a poll that may not wait (the first polls for CLIENT_POLL_S).
    while 0 not in modal_service.polls and time.time() < deadline:
        time.sleep(0.2)
    # Answered empty: the call cannot end before the gate opens.
    empty_polls = modal_service.polls.count(CLIENT_POLL_S)
    gate.write_text("go")
    first, second = first(), second()
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    [call] = modal_service.calls_of("train")
    assert (
        f"run twice is still training on Modal in call {call.call_id}: following that call" in second.stdout
    )
    # The first client polled while the call ran: each empty poll is the builtin TimeoutError inside modal's client.
    assert empty_polls >= 4 and "run twice finished" in first.stdout
    metrics = json.loads((modal_service.volume_path(OUTPUTS) / "runs/twice/metrics.json").read_text())
    assert metrics["epoch"] == 1
    assert "run twice finished" in second.stdout


def test_a_run_past_its_call_timeout_continues_in_a_new_call_even_when_the_first_call_is_retried(
    modal_service,
):
    # A timeout just past the stop margin: each call stops after its first training batch, saving last.ckpt, and
    # submits the next from inside its container. Two batches per epoch (60 training images, batch 24): the first
    # call trains one, the second the other. The first is preempted right after it recorded its successor, so
    # Modal retries it: the retry must only name that successor, not train again.
    timeout = load_settings().train["stop_before_timeout"] + 1
    modal_service.script("train", Attempt(preempt_when_committed=f"{OUTPUTS}/runs/long/calls/*.json"))
    result = run(modal_service, "run_name=long", "data.batch_size=24", f"timeout={timeout}", "gpu=L4")
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = modal_service.calls_of("train")
    assert [outcome for _, outcome in first.history] == ["preempted", "success"]
    assert [outcome for _, outcome in second.history] == ["success"]
    options = [(c.function.option("resources").gpu_config.gpu_type, c.function.option("timeout_secs"))
               for c in (first, second)]  # fmt: skip
    assert options == [("L4", timeout), ("L4", timeout)]
    run_dir = modal_service.volume_path(OUTPUTS) / "runs" / "long"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["epoch"], metrics["global_step"]) == (1, 2)
    assert metrics["resumed_from"].endswith("runs/long/checkpoints/last.ckpt")
    record = json.loads((run_dir / "launch.json").read_text())
    assert record["status"] == "completed" and record["segment"] == 2
    assert "run long: call 1 stopped before its timeout, call 2 continues it" in result.stdout
    cost = load_settings().cost(record["container_s"], "L4")
    assert "run long finished: epoch 1" in result.stdout
    assert f"in 2 calls, about ${cost:.2f} on L4" in result.stdout


def test_a_training_killed_for_memory_is_one_line_and_not_retried(modal_service, tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_MEMORY_EVENTS", str(tmp_path / "memory.events"))
    (tmp_path / "memory.events").write_text("oom_kill 0\n")
    result = run(modal_service, "run_name=oom", "+callbacks.oom._target_=faults.KilledForMemory")
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "killed by the system: out of memory" in line and "train.memory in modal.yml" in line
    [call] = modal_service.calls_of("train")
    assert [outcome for _, outcome in call.history] == ["success"]  # returned, so Modal never retried it
