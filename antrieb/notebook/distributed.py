"""Experiments past one machine: each grid entry one Dask task on a worker (a hypervisor host).

The unit is a whole notebook execution: :func:`run_cell` runs on a Dask worker, executes
the notebook with papermill in a child process (its own kernel, its VMs, the worker's
cache), and returns the executed notebook and the run folders it made, so the client
writes them into the one experiment record (:mod:`antrieb.notebook.experiment_record`).

- **Store**: the worker writes its point (``running``, then its status and runs) into
  the run store its own environment names (``ANTRIEB_STORE``), so with one PostgreSQL
  for every worker Grafana shows the experiment while it runs; the client ingests the
  whole record into its store at the end (the same keys: nothing doubles).
- **Capacity**: every cell asks for one ``vm_slots`` worker resource; a worker started
  with ``--resources vm_slots=N`` runs at most N cells at once, one started with
  ``--preload antrieb.notebook.distributed`` takes :func:`default_vm_slots` (this host's
  cores and accelerator). A scheduler whose workers have no slots is refused at once.
- **Faults**: a cell that fails for its own reasons (a papermill execution error, a
  missing example) *returns* ``status: failed`` and is never retried. A worker that dies
  mid-cell takes the cell's process tree with it (the papermill child has
  ``PDEATHSIG=KILL``, its kernel exits when its parent goes, the VM supervisor with the
  kernel) and the scheduler runs the cell elsewhere; a child killed under a live worker
  raises :class:`CellLost`, which Dask retries (``retries=``). Every attempt is a worker
  event, so the record lists them (``attempts``).
- **Ctrl-C** on the client sets a Dask ``Event``: running cells stop their papermill
  child (SIGINT, then SIGKILL), queued ones are cancelled.

Example::

    from dask.distributed import Client
    run_experiment("notebooks/experiment.ipynb", {"mode": "recorded"},
                   grid="notebooks/grids/examples.yaml", client=Client("tcp://head:8786"))
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from antrieb.notebook.experiment_record import (
    ENV,
    experiments_dir,
    linked_runs,
    sha256,
    write_record,
)

RESOURCE = "vm_slots"
RETRIES = 2  # a cell whose papermill child was killed under a live worker
STOP_GRACE_S = 20.0  # SIGINT lets the kernel tear its cluster down; then SIGKILL

logger = logging.getLogger(__name__)


class CellLost(RuntimeError):
    """The cell's papermill process died from a signal: not the notebook's fault."""


def _host_accel() -> str:
    """``ANTRIEB_ACCEL``, else the verdict of this host's last KVM probe boot
    (:mod:`antrieb.vm.accel` caches it), else TCG: the cautious guess."""
    from antrieb import config

    forced = config.setting("accel")
    if forced:
        return forced
    try:
        return str(json.loads((config.cache_dir() / "accel.json").read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "tcg"


def default_vm_slots(cores: int | None = None, accel: str | None = None) -> int:
    """Clusters one host runs at once: about one per core under TCG (emulation is CPU
    bound), a few per core under KVM (bounded by memory: a 4-node cluster ~2 GiB)."""
    cores = cores or os.cpu_count() or 1
    accel = accel or _host_accel()
    if accel != "kvm":
        return max(1, cores)
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 8.0
    return max(1, min(cores * 4, int(mem_gib // 2)))


def dask_setup(worker: Any) -> None:
    """``dask worker ADDRESS --preload antrieb.notebook.distributed``: the worker
    advertises ``vm_slots`` from this host's cores and accelerator
    (:func:`default_vm_slots`) unless ``--resources vm_slots=N`` said otherwise. Dask
    calls it before the worker registers; one worker process per host takes the host's
    whole share."""
    if RESOURCE not in worker.state.total_resources:
        slots = default_vm_slots()
        worker.state.total_resources[RESOURCE] = slots
        worker.state.available_resources[RESOURCE] = slots


def check_capacity(client: Any) -> str | None:
    """Raise if the scheduler's workers cannot run a cell (none advertises ``vm_slots``:
    every cell would wait forever); a note when no worker has joined yet."""
    from antrieb.errors import TaskError

    info = client.scheduler_info()
    workers = info.get("workers") or {}
    if not workers:
        return f"no Dask worker yet: the cells wait for one with {RESOURCE}"
    if not any((w.get("resources") or {}).get(RESOURCE) for w in workers.values()):
        raise TaskError(str(info.get("address")), f"none of its {len(workers)} "
                        f"worker(s) advertises {RESOURCE}: start them with --resources "
                        f"{RESOURCE}=N or --preload antrieb.notebook.distributed")
    return None


@contextlib.contextmanager
def local_client(workers: int, vm_slots: int | None = None) -> Iterator[Any]:
    """A Dask cluster of ``workers`` processes on this machine (``--workers N``), the
    host's slots shared among them; closed (workers ended) on exit."""
    from distributed import Client, LocalCluster

    slots = vm_slots or max(1, default_vm_slots() // workers)
    cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                           resources={RESOURCE: slots}, dashboard_address=None)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


# -- on the worker ----------------------------------------------------------------------


def _die_with_parent() -> None:  # preexec_fn: runs in the child, tied to this thread
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # A worker started in the background (nohup, a service, `dask worker &`) has SIGINT
    # ignored, and the cell would inherit that: then _stop's SIGINT could not let the
    # kernel take its cluster down, only the SIGKILL after the grace would end it.
    libc.signal(signal.SIGINT, signal.SIG_DFL)


def tar_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue()


def untar_folder(data: bytes, folder: Path) -> None:
    """What :func:`tar_folder` packed, unpacked into ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _write_point(experiment: dict[str, Any] | None, point: dict[str, Any]) -> None:
    """The point into this worker's own run store (its ``ANTRIEB_STORE``: a PostgreSQL
    shared by every worker shows the experiment while it runs). Never fails the cell:
    the client's store gets the whole record at the end anyway."""
    if experiment is None:
        return
    try:
        from antrieb import store

        if store.default_url() != "off":
            store.ingest_point(experiment, point)
    except Exception as exc:
        logger.warning("antrieb: experiment %s entry %s not written to the run store: %s",
                    experiment.get("experiment_id"), point.get("index"), exc)


def run_cell(xid: str, index: int, notebook: str, source: bytes, parameters: dict[str, Any],
             output_name: str, kernel: str | None, cwd: str, timeout: float | None,
             experiment: dict[str, Any] | None = None) -> dict[str, Any]:
    """One grid entry on this worker (a Dask task). Returns the entry's fields plus the
    executed notebook (``notebook_bytes``) and its run folders (``runs``).

    ``experiment`` (``experiment_id``, ``notebook``, ``created``, ``points``) makes the
    worker write the point into its run store when it starts and when it ends."""
    from distributed import Event, get_worker

    worker = get_worker()
    me = {"worker": worker.address, "host": socket.gethostname(), "pid": os.getpid()}
    started = time.time()
    worker.log_event(f"antrieb-experiment-{xid}", {"index": index, "started": started, **me})
    folder = experiments_dir() / xid
    point = {"index": index, "parameters": parameters, "started": started,
             "output": str(folder / "notebooks" / output_name), "worker": me["worker"],
             "host": me["host"]}
    _write_point(experiment, {**point, "status": "running", "mode": "none"})
    (folder / "notebooks").mkdir(parents=True, exist_ok=True)
    path = Path(notebook)
    if not (path.is_file() and sha256(path) == _digest(source)):
        path = folder / "source" / path.name  # another host: the client's copy
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source)
    from antrieb.converge.record import runs_dir

    # live runs of an earlier attempt of this cell on this host (a killed worker's)
    earlier = {r for r, d in linked_runs(xid, index)[1].items() if Path(d).parent == runs_dir()}
    output = folder / "notebooks" / output_name
    result_file = folder / "notebooks" / f".{output_name}.{os.getpid()}.result.json"
    args = {"input": str(path), "output": str(output), "parameters": parameters,
            "kernel": kernel, "cwd": cwd if Path(cwd).is_dir() else str(path.parent),
            "timeout": timeout, "result": str(result_file)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "antrieb.notebook.distributed", json.dumps(args)],
        env={**os.environ, ENV: f"{xid}/{index}"}, start_new_session=True,
        preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)
    cancel = Event(f"antrieb-cancel-{xid}")
    cancelled = False
    while proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        if proc.poll() is None and cancel.is_set():
            _stop(proc)
            cancelled = True
    try:
        outcome = json.loads(result_file.read_text(encoding="utf-8"))
        result_file.unlink()
    except (OSError, ValueError):
        outcome = None
    if cancelled:
        outcome = {"status": "cancelled", "error": "stopped: the experiment was cancelled"}
    elif outcome is None:
        raise CellLost(f"entry {index}: papermill exited with {proc.returncode} on "
                       f"{me['host']} without a result")
    run_ids, dirs, mode = linked_runs(xid, index)
    run_ids = [r for r in run_ids if r not in earlier]
    dirs = {r: d for r, d in dirs.items() if r not in earlier}
    runs = {}
    for run_id, run_dir in dirs.items():
        p = Path(run_dir)
        if p.is_dir():
            runs[run_id] = {"path": run_dir, "live": p.parent == runs_dir(), "tar": tar_folder(p)}
    finished = time.time()
    _write_point(experiment, {**point, **outcome, "finished": finished, "run_ids": run_ids,
                              "run_dirs": dirs, "mode": mode})
    return {"index": index, **outcome, "started": started, "finished": finished,
            "run_ids": run_ids, "mode": mode, "runs": runs, "earlier_run_ids": sorted(earlier),
            "notebook_bytes": output.read_bytes() if output.exists() else b"", **me}


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _execute(args: dict[str, Any]) -> None:
    """The papermill child: executes one notebook, writes ``{status, error}``."""
    import papermill

    try:
        papermill.execute_notebook(
            args["input"], args["output"], parameters=args["parameters"],
            kernel_name=args["kernel"], cwd=args["cwd"], progress_bar=False,
            execution_timeout=args["timeout"], request_save_on_cell_execute=True)
        outcome = {"status": "ok", "error": None}
    except KeyboardInterrupt:
        return
    except Exception as exc:  # the notebook's own failure: recorded, never retried
        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:4000]}
    Path(args["result"]).write_text(json.dumps(outcome), encoding="utf-8")


# -- on the client ----------------------------------------------------------------------


def _bring_back(folder: Path, entry: dict[str, Any], result: dict[str, Any]) -> None:
    """The executed notebook and run folders into this host's experiment record."""
    from antrieb.converge.record import runs_dir

    Path(entry["output"]).write_bytes(result.pop("notebook_bytes") or b"")
    run_dirs = {}
    for run_id, run in (result.pop("runs") or {}).items():
        here = Path(run["path"])
        if not here.is_dir():  # another host's run: unpack it here
            here = (runs_dir() if run["live"] else folder / "runs") / run_id
            untar_folder(run["tar"], here)
        run_dirs[run_id] = str(here)
    entry.update({k: v for k, v in result.items() if k != "index"}, run_dirs=run_dirs)


def worker_attempts(client: Any, xid: str) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    for _, msg in client.get_events(f"antrieb-experiment-{xid}"):
        found.setdefault(int(msg["index"]), []).append(
            {k: msg.get(k) for k in ("worker", "host", "pid", "started")})
    return found


def run_cells(client: Any, source: Path, entries: list[dict[str, Any]], folder: Path,
              record: dict[str, Any], *, kernel: str | None, cwd: str | None,
              timeout: float | None, log: Callable[[str], Any] | None = None) -> None:
    """Submit every entry as a Dask task and fill ``record["grid"]`` as they finish."""
    from distributed import Event, as_completed

    xid = record["experiment_id"]
    data = source.read_bytes()
    experiment = {"experiment_id": xid, "notebook": record["notebook"],
                  "created": record["created"], "points": len(entries)}
    futures = {}
    for index, params in enumerate(entries):
        output = folder / "notebooks" / f"{index:03d}-{source.stem}.ipynb"
        record["grid"].append({"index": index, "parameters": params, "output": str(output),
                               "status": "queued", "error": None, "run_ids": [],
                               "run_dirs": {}, "mode": "none", "started": None,
                               "finished": None, "worker": None, "attempts": []})
        fut = client.submit(run_cell, xid, index, str(source), data, params, output.name,
                            kernel, str(cwd or source.parent), timeout, experiment,
                            key=f"antrieb-cell-{xid}-{index:03d}", pure=False,
                            resources={RESOURCE: 1}, retries=RETRIES)
        futures[fut] = index
    write_record(folder, record)
    done = 0
    try:
        for fut in as_completed(list(futures)):
            entry = record["grid"][futures[fut]]
            try:
                _bring_back(folder, entry, fut.result())
            except Exception as exc:  # retries used up, or the cell killed its workers
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:4000],
                             finished=time.time())
            entry["attempts"] = worker_attempts(client, xid).get(entry["index"], [])
            done += 1
            if log:
                log(f"[{done}/{len(entries)}] entry {entry['index']} {entry['status']} on "
                    f"{entry.get('host')} ({entry.get('worker')}) "
                    f"{entry['parameters']}")
            write_record(folder, record)
    except KeyboardInterrupt:
        Event(f"antrieb-cancel-{xid}", client=client).set()
        client.cancel([f for f in futures if not f.done()])
        for entry in record["grid"]:
            if entry["status"] in ("queued", "running"):
                entry.update(status="cancelled", error="cancelled (Ctrl-C)",
                             attempts=worker_attempts(client, xid).get(entry["index"], []))
        write_record(folder, record)
        raise
    attempts = worker_attempts(client, xid)  # events may trail the results a little
    for entry in record["grid"]:
        entry["attempts"] = attempts.get(entry["index"], entry["attempts"])
    write_record(folder, record)


if __name__ == "__main__":
    _execute(json.loads(sys.argv[1]))
