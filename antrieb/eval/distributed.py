"""Evaluations past one machine: each run one Dask task on a worker (a hypervisor host).

The same Dask set-up as papermill experiments (:mod:`antrieb.notebook.distributed`):
``--dask ADDRESS`` or ``--workers N``, every run asks for one ``vm_slots`` resource so no
host runs more clusters than it has room for. The unit is one run, not a notebook: the
worker runs the task's :class:`~antrieb.converge.Converger` itself, with its own VMs,
cache and run store, and sends back the run's row and its record folder (unpacked into
this host's runs folder when it was made elsewhere), so the evaluation's record, rows
and figures are the same as a local one's.

- **Faults**: a worker that dies mid-run takes its VMs with it (the VM supervisor dies
  with its owner) and the scheduler runs that run again on another worker, under a new
  run id; every attempt is a worker event, listed in the entry (``attempts``). A run
  that fails for its own reasons is a result, never retried; a harness error on the
  worker is recorded as ``failed`` with its message.
- **Ctrl-C** sets a Dask ``Event``: running runs stop (their clusters down, recorded
  ``stopped``), queued ones return at once as ``cancelled``; what finished is kept.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from antrieb.notebook.distributed import RESOURCE, tar_folder, untar_folder

STOP_WAIT_S = 60.0  # after Ctrl-C: how long the stopped runs get to come back


def _event(kind: str, xid: str, client: Any = None) -> Any:
    from distributed import Event

    return Event(f"antrieb-{kind}-{xid}", client=client)


def run_on_worker(xid: str, index: int, llm: str, task: str, repeat: int, run_id: str,
                  budgets: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """One evaluation run on this worker (a Dask task): the row, the run's status and its
    record folder (``tar``), and where it ran. ``run_id`` is the one the record holds; a
    retry on a host where an earlier attempt left that folder takes a new one."""
    from distributed import get_worker

    from antrieb.converge.converger import Converger
    from antrieb.converge.models import Budgets
    from antrieb.converge.record import new_run_id, runs_dir
    from antrieb.converge.runs import warm_up
    from antrieb.eval.metrics import run_row
    from antrieb.eval.providers import provider_for
    from antrieb.tasks.load import load_task

    worker = get_worker()
    me = {"worker": worker.address, "host": socket.gethostname(), "pid": os.getpid()}
    worker.log_event(f"antrieb-experiment-{xid}", {"index": index, "started": time.time(),
                                                   **me})
    cancel = _event("cancel", xid)
    if cancel.is_set():
        return {"index": index, "status": "cancelled", **me}
    spec = load_task(task)
    warm_up({n.image for n in spec.task.topology.nodes})  # type: ignore[union-attr]
    conv = Converger(spec.task, provider=provider_for(llm, spec),
                     budgets=Budgets.model_validate(budgets), meta=meta,
                     run_id=new_run_id() if (runs_dir() / run_id).exists() else run_id)
    done = threading.Event()

    def watch() -> None:  # Ctrl-C on the client: stop this run, its cluster goes down
        while not done.wait(1.0):
            with contextlib.suppress(Exception):
                if cancel.is_set():
                    conv.stop("interrupted (Ctrl-C)")
                    return

    threading.Thread(target=watch, name=f"antrieb-eval-watch-{index}", daemon=True).start()
    try:
        result = conv.run()
    finally:
        done.set()
    row = run_row(result, llm=llm, task=task, repeat=repeat, model=conv.provider.model)
    folder = Path(result.record_dir or "")
    return {"index": index, "status": "stopped" if result.status == "stopped" else "ok",
            "row": row, "run_id": result.run_id, "path": str(folder),
            "tar": tar_folder(folder) if result.record_dir and folder.is_dir() else b"", **me}


def _bring_back(result: dict[str, Any]) -> str:
    """The run's record folder in this host's runs (unpacked there when the worker's
    cache is another one: another host's, or a worker given its own)."""
    from antrieb.converge.record import runs_dir

    here = Path(result["path"])
    if here.parent != runs_dir() and result.get("tar"):
        here = runs_dir() / result["run_id"]
        untar_folder(result["tar"], here)
    return str(here)


def run_on_dask(client: Any, record: Any, jobs: list[Any], budgets: dict[str, Any],
                log: Callable[[str], None]) -> tuple[list[dict[str, Any]], bool]:
    """Every job a Dask task; the rows of the runs that finished, and whether Ctrl-C cut
    the evaluation short. ``record`` (an :class:`~antrieb.eval.record.EvalRecord`) is
    updated as runs finish."""
    from distributed import as_completed

    from antrieb.notebook.distributed import worker_attempts

    xid = record.experiment_id
    futures = {}
    for job in jobs:
        meta = {"experiment_id": xid, "experiment_index": job.index,
                "eval": {"llm": job.llm, "task": job.spec.name, "repeat": job.repeat}}
        fut = client.submit(run_on_worker, xid, job.index, job.llm, job.spec.name,
                            job.repeat, job.run_id, budgets, meta,
                            key=f"antrieb-eval-{xid}-{job.index:03d}", pure=False,
                            resources={RESOURCE: 1})
        futures[fut] = job
    rows: list[dict[str, Any]] = []

    def take(fut: Any) -> None:
        job = futures[fut]
        attempts = worker_attempts(client, xid).get(job.index, [])
        try:
            result = fut.result()
        except Exception as exc:  # the harness on the worker, or every worker it ran on died
            record.update(job.index, status="failed", finished=time.time(), attempts=attempts,
                          error=f"{type(exc).__name__}: {exc}"[:4000])
            log(f"{job.llm} {job.spec.name} #{job.repeat}: harness error: {exc}")
            return
        fields = {k: result.get(k) for k in ("worker", "host")}
        if result["status"] == "cancelled":
            record.update(job.index, status="cancelled", run_ids=[], attempts=attempts,
                          error="cancelled (Ctrl-C)", **fields)
            return
        record.update(job.index, status=result["status"], finished=time.time(),
                      run_ids=[result["run_id"]], attempts=attempts,
                      run_dirs={result["run_id"]: _bring_back(result)}, **fields)
        row = result["row"]
        rows.append(row)
        log(f"[{len(rows)}/{len(jobs)}] {job.llm} {job.spec.name} #{job.repeat}: "
            f"{row['status']} after {row['iterations']} iteration(s), {row['wall_s']:.0f}s "
            f"on {fields['host']} ({fields['worker']})")

    try:
        for fut in as_completed(list(futures)):
            take(fut)
        return rows, False
    except KeyboardInterrupt:
        _event("cancel", xid, client).set()
        log("interrupted: stopping the running runs, keeping what finished")
        left = [f for f in futures if not f.done()]
        with contextlib.suppress(Exception):  # as_completed's TimeoutError too
            for fut in as_completed(left, timeout=STOP_WAIT_S):
                take(fut)
        client.cancel([f for f in futures if not f.done()])
        return rows, True
