"""What a Modal run pays for, on the offline Modal service: each function's CPU and memory as (request, limit),
its threads sized to the request, and estimates that count what the limits allow."""

import os

import pytest
import torch
import yaml
from helpers import APP_FILE, FAST
from modal_service import modal_command

from cats_model.cloud.settings import MODAL_YML, load_settings
from cats_model.config import compose_train_config
from cats_model.serve.app import model_threads
from cats_model.system import CPUS_ENV, available_cpus, default_num_workers, use_available_cpus
from cats_model.train import train

SECTIONS = {"train": "train", "bench": "train", "prepare_data": "prepare_data", "tensorboard": "tools"}


@pytest.fixture(scope="module")
def declared() -> dict:
    return yaml.safe_load(MODAL_YML.read_text())


def test_modal_is_asked_for_each_functions_request_and_limit(modal_service, declared):
    deployed = modal_command(modal_service, "deploy", str(APP_FILE))
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    functions = {f.tag: f.definition for f in modal_service.functions.values() if f.base_id is None}
    for tag, section in SECTIONS.items():
        resources, wanted = functions[tag].resources, declared[section]
        assert [resources.milli_cpu / 1000, resources.milli_cpu_max / 1000] == wanted["cpu"], tag
        assert [resources.memory_mb, resources.memory_mb_max] == wanted["memory"], tag
        [secret] = functions[tag].secret_ids  # `env=`: what the container's threads are sized to
        assert modal_service.secrets[secret] == {CPUS_ENV: str(wanted["cpu"][0])}, tag
    assert modal_service.unanswered == [] and modal_service.faults == []


def test_threads_and_workers_follow_the_cpu_request_not_the_cores_in_sight(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))  # a big machine's cores
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert available_cpus() == 64 and model_threads() == 63
    monkeypatch.setenv(CPUS_ENV, str(load_settings().serve["cpu"][0]))  # 2.0: a serving container
    assert (available_cpus(), model_threads()) == (2, 1)
    monkeypatch.setenv(CPUS_ENV, str(load_settings().train["cpu"][0]))  # 8.0: a training container
    assert (available_cpus(), default_num_workers()) == (8, 7)


@pytest.mark.slow
def test_a_training_sizes_its_threads_to_the_cpu_request_unless_omp_num_threads_is_set(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(CPUS_ENV, "1")
    try:
        torch.set_num_threads(2)  # PyTorch's own count of the cores in sight (64 on a big host)
        train(compose_train_config(FAST, tmp_path))
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"  # what the DDP ranks Lightning starts inherit
        # Two DDP ranks share the request; the user's own OMP_NUM_THREADS stands.
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv(CPUS_ENV, "2")
        torch.set_num_threads(2)
        assert use_available_cpus(processes=2) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert use_available_cpus(processes=1) == 2
    finally:
        torch.set_num_threads(threads)


def test_the_estimate_counts_the_gpu_and_the_cpu_and_memory_limits(declared):
    prices, train = declared["prices"], declared["train"]
    hourly = (
        prices["gpu"]["T4"]
        + prices["cpu_core"] * train["cpu"][1]
        + prices["memory_gib"] * train["memory"][1] / 1024
    )
    assert load_settings().hourly_price("T4") == pytest.approx(hourly)
    assert train["cpu"][0] == train["cpu"][1] and train["memory"][0] == train["memory"][1]  # the bill is this
