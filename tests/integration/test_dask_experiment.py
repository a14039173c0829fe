"""Experiments on Dask: a real scheduler and two worker processes on localhost (the CLI
``dask scheduler`` / ``dask worker`` a multi-host setup uses) run a recorded-mode grid;
its rows equal the same grid run locally, and a cell failing on its own is not retried."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from antrieb.notebook.experiments import load_experiment, run_experiment

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "experiment.ipynb"
GRID = {"example": ["nginx-lb", "haproxy-nginx", "firewall", "no-such-example"]}
COLUMNS = ["index", "example", "mode", "status", "run_ids", "converged", "iterations",
           "paths", "run_status"]


@contextlib.contextmanager
def dask_cluster(tmp: Path, workers: int = 2, env: dict[str, str] | None = None,
                 slots: tuple[str, ...] = ("--resources", "vm_slots=1")):
    """``dask scheduler`` and ``workers`` x ``dask worker --resources vm_slots=1`` (or
    other ``slots`` arguments), each its own process (the workers with ``env``, default
    this one's), ended by PID."""
    dask = str(Path(sys.executable).parent / "dask")
    tmp.mkdir(parents=True, exist_ok=True)
    sched_file = tmp / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1", *slots,
                 "--no-dashboard", "--no-nanny"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        yield address, procs[1:]
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(900)
def test_grid_on_two_dask_workers_equals_the_local_run(private_cache, tmp_path) -> None:
    from distributed import Client

    local = run_experiment(NOTEBOOK, {"mode": "recorded"}, grid=GRID)
    with dask_cluster(tmp_path) as (address, workers), Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        spread = run_experiment(NOTEBOOK, {"mode": "recorded"}, grid=GRID, client=client)
        addresses = set(client.scheduler_info()["workers"])
        assert all(w.poll() is None for w in workers)  # the workers outlive their cells
    rows = spread[COLUMNS].astype(str).to_dict("records")
    assert rows == local[COLUMNS].astype(str).to_dict("records")
    assert list(spread["status"]) == ["ok", "ok", "ok", "failed"]
    assert set(spread["worker"]) <= addresses and len(set(spread["worker"])) == 2
    record = load_experiment(spread["experiment_id"][0])
    for entry in record["grid"]:
        assert Path(entry["output"]).is_file()  # the executed notebook came back
        assert json.loads(Path(entry["output"]).read_text())["cells"]
        # one attempt each: the failing cell is recorded, not retried
        assert [a["worker"] for a in entry["attempts"]] == [entry["worker"]]
    assert "no-such-example" in record["grid"][3]["error"]
    assert os.environ.get("ANTRIEB_EXPERIMENT") is None


@pytest.mark.timeout(300)
def test_workers_without_slots_are_refused_and_the_preload_gives_them(
        private_cache, tmp_path) -> None:
    from distributed import Client

    from antrieb.errors import TaskError
    from antrieb.notebook.distributed import default_vm_slots

    with dask_cluster(tmp_path / "plain", 1, slots=()) as (address, _), \
            Client(address, timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        with pytest.raises(TaskError, match="advertises vm_slots"):  # not a silent hang
            run_experiment(NOTEBOOK, grid=GRID, client=client)
    preload = ("--preload", "antrieb.notebook.distributed")
    with dask_cluster(tmp_path / "preload", 1, slots=preload) as (address, _), \
            Client(address, timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["resources"] == {"vm_slots": default_vm_slots()}
        frame = run_experiment(NOTEBOOK, grid={"example": ["nginx-lb"]}, client=client)
        assert list(frame["status"]) == ["ok"]


def _cell_processes(worker_pid: int) -> list[int]:
    """The papermill children a worker runs cells in."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            stat = (cmdline.parent / "stat").read_text().rpartition(")")[2].split()
            if int(stat[1]) == worker_pid and stat[0] != "Z" and \
                    b"antrieb.notebook.distributed" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.timeout(600)
def test_ctrl_c_on_the_client_stops_running_cells_and_cancels_the_rest(
        private_cache, tmp_path) -> None:
    import nbformat
    from distributed import Client

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("seconds = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import time\ntime.sleep(seconds)")]
    notebook = tmp_path / "sleep.ipynb"
    nbformat.write(nb, notebook)
    (tmp_path / "grid.yaml").write_text("seconds: [600, 601, 602]\n")
    antrieb = str(Path(sys.executable).parent / "antrieb")
    with dask_cluster(tmp_path) as (address, workers), Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = list(client.run(os.getpid).values())
        # env resets SIGINT to its default: a CI started in the background passes it on
        # ignored, and a CLI that ignores Ctrl-C is right to run on
        command = ["env", "--default-signal=INT", antrieb, "experiment", "run", str(notebook),
                   "--grid", str(tmp_path / "grid.yaml"), "--dask", address, "--json"]
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        deadline = time.monotonic() + 120
        while not all(_cell_processes(p) for p in pids):  # a cell running on each worker
            assert cli.poll() is None and time.monotonic() < deadline, cli.communicate()
            time.sleep(0.5)
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=60)
        assert cli.returncode == 130, stderr
        stop_by = time.monotonic() + 40  # SIGINT to papermill, SIGKILL after 20 s
        while any(_cell_processes(p) for p in pids) and time.monotonic() < stop_by:
            time.sleep(0.5)
        assert not any(_cell_processes(p) for p in pids), "a cell ran on after Ctrl-C"
        assert all(w.poll() is None for w in workers)  # the workers live on
    (folder,) = (private_cache / "experiments").iterdir()
    record = json.loads((folder / "experiment.json").read_text())
    assert [e["status"] for e in record["grid"]] == ["cancelled"] * 3
