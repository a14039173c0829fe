"""``antrieb eval`` on Dask: a real scheduler and two worker processes on localhost run an
evaluation whose rows equal the same evaluation run locally; every run's record comes
back to the client's experiment record (the workers have a cache of their own, as
another host would), and the runs spread over both workers. The
workers' clusters are the in-memory twin (their preload): what is under test is the
distribution, not the VMs (tests/vm has the engine on real VMs)."""

from __future__ import annotations

import _thread
import json
import os
import threading
import time
from pathlib import Path

import pytest

from antrieb.converge.record import runs_dir
from antrieb.eval import run_eval
from antrieb.notebook.experiments import load_experiment

from .test_dask_experiment import dask_cluster
from .twin_worker import patch_in

ROOT = Path(__file__).resolve().parents[2]
LLMS, TASKS = ["oracle", "near-miss"], ["nginx-lb", "haproxy-nginx"]
BUDGET = {"max_iterations": 2}
SAME = ["llm", "task", "repeat", "status", "converged", "iterations", "attempts", "paths",
        "failure_classes", "tokens", "fresh_server", "idempotent", "reboot", "residue"]


@pytest.mark.timeout(600)
def test_eval_on_two_dask_workers_equals_the_local_run(private_cache, tmp_path,
                                                       monkeypatch) -> None:
    from distributed import Client

    patch_in(monkeypatch)
    local = run_eval(LLMS, TASKS, budgets=BUDGET, slots=2)
    lines: list[str] = []
    # another host's cache: the records must travel back
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANTRIEB_CACHE": str(tmp_path / "worker")}
    slots = ("--resources", "vm_slots=1", "--preload", "tests.integration.twin_worker")
    with dask_cluster(tmp_path, env=env, slots=slots) as (address, workers), \
            Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        spread = run_eval(LLMS, TASKS, budgets=BUDGET, client=client, log=lines.append)
        addresses = set(client.scheduler_info()["workers"])
        assert all(w.poll() is None for w in workers)
    assert not spread.interrupted
    assert spread.runs[SAME].astype(str).to_dict("records") == \
        local.runs[SAME].astype(str).to_dict("records")
    overall = {row["llm"]: row for row in spread.to_dict()["overall"]}
    assert overall["oracle"]["pass@1"] == 1.0 and overall["near-miss"]["pass@1"] == 0.0
    record = load_experiment(spread.experiment_id)
    assert record["kind"] == "eval" and len(record["grid"]) == 4
    assert {e["worker"] for e in record["grid"]} == addresses  # both workers took runs
    for entry in record["grid"]:
        assert entry["status"] == "ok", entry
        (run_id,) = entry["run_ids"]
        here = Path(entry["run_dirs"][run_id])
        assert here.parent == runs_dir()  # unpacked into this host's runs
        run = json.loads((here / "run.json").read_text())
        assert run["run_id"] == run_id and run["experiment_id"] == spread.experiment_id
        assert [a["worker"] for a in entry["attempts"]] == [entry["worker"]]  # no retry
    assert sum("[4/4]" in line for line in lines) == 1


def _both_running(client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(map(len, client.processing().values())) >= 2:
            time.sleep(1.0)  # both runs are in their scripts by now
            return
        time.sleep(0.1)
    raise AssertionError("the runs did not start on both workers")


@pytest.mark.timeout(600)
def test_ctrl_c_stops_the_running_runs_cancels_the_rest_and_keeps_the_record(
        private_cache, tmp_path, sigint_handled) -> None:
    from distributed import Client

    from .twin_worker import SLOW

    env = {**os.environ, "PYTHONPATH": str(ROOT), SLOW: "60"}
    slots = ("--resources", "vm_slots=1", "--preload", "tests.integration.twin_worker")
    with dask_cluster(tmp_path, env=env, slots=slots) as (address, workers), \
            Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)

        def ctrl_c_once_both_run() -> None:
            _both_running(client)
            _thread.interrupt_main()

        threading.Thread(target=ctrl_c_once_both_run, daemon=True).start()
        t0 = time.monotonic()
        result = run_eval(LLMS, TASKS, budgets=BUDGET, client=client)
        took = time.monotonic() - t0
        assert all(w.poll() is None for w in workers)
    assert result.interrupted and took < 50, took  # not the scripts' 60 s
    assert sorted(result.runs["status"]) == ["stopped", "stopped"]
    record = load_experiment(result.experiment_id)
    assert record["interrupted"]
    assert sorted(e["status"] for e in record["grid"]) == \
        ["cancelled", "cancelled", "stopped", "stopped"]
    for entry in record["grid"]:
        if entry["status"] == "stopped":
            (run_id,) = entry["run_ids"]
            run = json.loads((Path(entry["run_dirs"][run_id]) / "run.json").read_text())
            assert run["state"] == "stopped" and "Ctrl-C" in run["result"]["reason"]
        else:
            assert entry["run_ids"] == []


@pytest.mark.timeout(600)
def test_a_run_whose_worker_is_killed_runs_again_on_the_other_worker(
        private_cache, tmp_path) -> None:
    from distributed import Client

    from .twin_worker import SLOW

    env = {**os.environ, "PYTHONPATH": str(ROOT), SLOW: "3"}
    slots = ("--resources", "vm_slots=1", "--preload", "tests.integration.twin_worker")
    with dask_cluster(tmp_path, env=env, slots=slots) as (address, workers), \
            Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        by_pid = {pid: addr for addr, pid in client.run(os.getpid).items()}
        victim = workers[0]

        def kill_one_mid_run() -> None:
            _both_running(client)
            victim.kill()  # SIGKILL, by the PID this test started

        threading.Thread(target=kill_one_mid_run, daemon=True).start()
        result = run_eval(["oracle"], TASKS, budgets=BUDGET, client=client)
        assert victim.poll() is not None and workers[1].poll() is None
    dead, alive = by_pid[victim.pid], by_pid[workers[1].pid]
    assert not result.interrupted and list(result.runs["converged"]) == [True, True]
    record = load_experiment(result.experiment_id)
    assert all(e["status"] == "ok" and e["worker"] == alive for e in record["grid"])
    retried = [e for e in record["grid"] if len(e["attempts"]) > 1]
    assert len(retried) == 1, [e["attempts"] for e in record["grid"]]
    assert [a["worker"] for a in retried[0]["attempts"]] == [dead, alive]
