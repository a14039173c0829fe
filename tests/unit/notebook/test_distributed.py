"""Experiments on Dask without Dask: a host's slots, the worker preload, and a scheduler
whose workers cannot run a cell refused before anything is recorded.
The real scheduler and workers are in tests/integration/test_dask_experiment.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from antrieb.errors import TaskError
from antrieb.notebook import distributed
from antrieb.notebook.experiments import run_experiment

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "experiment.ipynb"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANTRIEB_ACCEL", raising=False)
    return tmp_path / "cache"


def test_slots_follow_the_cores_and_the_accelerator(_private_cache, monkeypatch):
    assert distributed.default_vm_slots(cores=4, accel="tcg") == 4
    kvm = distributed.default_vm_slots(cores=4, accel="kvm")
    assert 1 <= kvm <= 16  # a few per core, bounded by memory
    assert distributed.default_vm_slots(cores=4) == 4  # never probed: TCG, the cautious guess
    _private_cache.mkdir(parents=True, exist_ok=True)
    (_private_cache / "accel.json").write_text(json.dumps({"name": "kvm", "reason": "probe"}))
    assert distributed.default_vm_slots(cores=4) == kvm  # this host's probe said KVM
    monkeypatch.setenv("ANTRIEB_ACCEL", "tcg")
    assert distributed.default_vm_slots(cores=4) == 4


def _worker(resources: dict[str, float]) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(total_resources=dict(resources),
                                                 available_resources=dict(resources)))


def test_the_preload_gives_a_worker_this_hosts_slots_unless_told():
    plain = _worker({})
    distributed.dask_setup(plain)
    slots = distributed.default_vm_slots()
    assert plain.state.total_resources == plain.state.available_resources == \
        {"vm_slots": slots}
    told = _worker({"vm_slots": 1, "GPU": 2})
    distributed.dask_setup(told)
    assert told.state.total_resources == {"vm_slots": 1, "GPU": 2}


class _Client:
    def __init__(self, workers: dict[str, dict]) -> None:
        self.workers = workers

    def scheduler_info(self) -> dict:
        return {"address": "tcp://head:8786", "workers": self.workers}


def test_a_scheduler_without_slots_is_refused_before_anything_is_recorded(_private_cache):
    client = _Client({"tcp://10.0.0.2:1": {"resources": {}},
                      "tcp://10.0.0.3:1": {"resources": {"GPU": 1}}})
    with pytest.raises(TaskError, match=r"tcp://head:8786.*--resources vm_slots=N"):
        run_experiment(NOTEBOOK, grid={"example": ["nginx-lb"]}, client=client)
    assert not list((_private_cache / "experiments").glob("*/experiment.json"))
    assert distributed.check_capacity(_Client({})) is not None  # none yet: they may join
    assert distributed.check_capacity(
        _Client({"tcp://10.0.0.2:1": {"resources": {"vm_slots": 2}}})) is None
