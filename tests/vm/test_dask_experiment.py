"""A live experiment cell on a Dask worker: it converges, and killing the worker running
it (by PID) leaves no QEMU behind while the cell completes on the other worker.

The cheapest live example is firewall (2 nodes, 3 iterations, ~3 min under TCG); the
cell runs about one and a half times, so the test is in the slow tier."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from antrieb.notebook.experiments import load_experiment, run_experiment
from tests.integration.test_dask_experiment import NOTEBOOK, dask_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _qemus_under(pid: int) -> list[int]:
    """QEMU processes descending from pid (worker -> papermill -> kernel -> supervisor)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd.split(b"\0")[0]:
                found.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z"


def test_live_cell_survives_its_worker_being_killed(debian12, tmp_path) -> None:
    from distributed import Client

    params = {"mode": "live", "example": "firewall", "max_iterations": 4}
    with dask_cluster(tmp_path) as (address, _), Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)  # worker address -> its PID (no nanny)
        outcome: dict[str, object] = {}
        runner = threading.Thread(target=lambda: outcome.update(
            frame=run_experiment(NOTEBOOK, grid=[params], client=client)), daemon=True)
        runner.start()
        deadline = time.monotonic() + 900
        victim, qemus = None, []
        while not qemus:  # the cell is mid-run once its worker has VMs up
            assert runner.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(2)
            for addr, pid in pids.items():
                if qemus := _qemus_under(pid):
                    victim = addr
                    break
        time.sleep(20)  # into the first iteration: apply over SSH
        qemus = _qemus_under(pids[victim]) or qemus
        os.kill(pids[victim], signal.SIGKILL)
        gone_by = time.monotonic() + 60
        while any(_alive(q) for q in qemus) and time.monotonic() < gone_by:
            time.sleep(1)
        assert not [q for q in qemus if _alive(q)], "QEMU outlived its killed worker"
        runner.join(timeout=1800)
        assert not runner.is_alive()
    frame = outcome["frame"]
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["mode"] == "live", row["error"]
    assert row["converged"], row.to_dict()
    entry = load_experiment(row["experiment_id"])["grid"][0]
    survivor = next(a for a in pids if a != victim)
    assert entry["worker"] == survivor
    # the retry is in the record: an attempt on the killed worker, then the survivor
    assert [a["worker"] for a in entry["attempts"]] == [victim, survivor]
