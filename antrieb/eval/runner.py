"""``run_eval``: models over catalogue tasks with the normal engine, on fresh clusters.

Each run is a :class:`~antrieb.converge.Converger` of the task with the model alone (no
recording to follow), recorded like every run (its conversation in ``llm.jsonl``, so a
good run can be replayed offline and become a curated example). Runs go on at once up
to ``slots`` (default: the host's VM slots, :func:`antrieb.notebook.distributed.default_vm_slots`,
the capacity notion the Dask experiments use). The order interleaves models and tasks,
so an interrupted evaluation still has a first run of as many of them as it got to.

Ctrl-C stops every running run (its cluster goes down within a second, the run is
recorded ``stopped``), cancels the queued ones, and returns what finished: the partial
result, ``interrupted=True``, the record written.

Example::

    ev = run_eval(["oracle", "near-miss"], ["nginx-static", "python-unit"], repeats=1)
    ev.per_llm        # pass@1 1.0 and 0.0
    ev.runs[["llm", "task", "converged", "iterations", "failure_classes"]]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from antrieb.converge.converger import Converger
from antrieb.converge.models import Budgets, Topology
from antrieb.converge.record import new_run_id
from antrieb.errors import ConfigError
from antrieb.eval.metrics import default_ks, per_llm, per_task, run_row
from antrieb.eval.providers import check_spec, provider_for
from antrieb.eval.record import EvalRecord
from antrieb.tasks.load import load_task, names
from antrieb.tasks.model import CatalogueTask


@dataclass
class EvalResult:
    """What an evaluation produced: a row per finished run and the figures over them."""

    experiment_id: str
    rows: list[dict[str, Any]]
    ks: list[int]
    interrupted: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> Any:
        """One row per run (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    @property
    def per_task(self) -> Any:
        import pandas as pd

        return pd.DataFrame(per_task(self.rows, self.ks))

    @property
    def per_llm(self) -> Any:
        import pandas as pd

        return pd.DataFrame(per_llm(self.rows, self.ks))

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``antrieb eval --json``."""
        return {"experiment_id": self.experiment_id, "interrupted": self.interrupted,
                **self.settings, "ks": self.ks, "overall": per_llm(self.rows, self.ks),
                "per_task": per_task(self.rows, self.ks), "runs": self.rows}


@dataclass
class _Job:
    index: int
    llm: str
    spec: CatalogueTask
    repeat: int
    run_id: str


def _budgets(budgets: Budgets | dict[str, Any] | None) -> Budgets:
    if isinstance(budgets, Budgets):
        return budgets
    from pydantic import ValidationError

    try:
        return Budgets.model_validate(budgets or {})
    except ValidationError as exc:
        raise ConfigError(f"bad budget: {exc.errors()[0]['loc']}: "
                          f"{exc.errors()[0]['msg']}") from None


def _default_slots() -> int:
    from antrieb.notebook.distributed import default_vm_slots

    return default_vm_slots()


def run_eval(llms: str | Sequence[str], tasks: Sequence[str] | None = None, *,
             repeats: int = 1, budgets: Budgets | dict[str, Any] | None = None,
             slots: int | None = None, ks: Sequence[int] | None = None,
             cluster_factory: Callable[[Topology], Any] | None = None,
             log: Callable[[str], None] | None = None, client: Any = None) -> EvalResult:
    """Run every task (default: the whole catalogue) ``repeats`` times with each model of
    ``llms`` (specs: see :mod:`antrieb.eval.providers`). Bad input raises
    :class:`~antrieb.errors.ConfigError` before any VM starts.

    With ``client`` (a ``dask.distributed.Client``) each run is a Dask task on a worker
    (:mod:`antrieb.eval.distributed`), one ``vm_slots`` each; ``slots`` and
    ``cluster_factory`` are then the workers' own."""
    llms = [llms] if isinstance(llms, str) else list(llms)
    if not llms:
        raise ConfigError("no model to evaluate: give at least one --llm")
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    specs = [load_task(name) for name in (tasks or names())]
    budget = _budgets(budgets)
    for spec_name in dict.fromkeys(llms):
        check_spec(spec_name)
    ks = sorted(set(ks)) if ks else default_ks(repeats)
    say = log or (lambda line: None)
    if client is not None:
        from antrieb.notebook.distributed import check_capacity

        note = check_capacity(client)  # raises when no worker could ever take a run
        if note:
            say(note)
    elif cluster_factory is None:  # build the images once, before runs race to
        from antrieb.converge.runs import warm_up

        warm_up({n.image for s in specs for n in s.task.topology.nodes})  # type: ignore[union-attr]
    record = EvalRecord.create(llms, [s.name for s in specs], repeats, budget)
    jobs = []
    for repeat in range(repeats):  # interleaved: every model and task once, then again
        for spec in specs:
            for llm in llms:
                run_id = new_run_id()
                index = record.add(llm, spec.name, repeat, run_id)
                jobs.append(_Job(index, llm, spec, repeat, run_id))
    settings = {"llms": llms, "tasks": [s.name for s in specs], "repeats": repeats,
                "budgets": budget.model_dump()}
    if client is not None:
        from antrieb.eval.distributed import run_on_dask

        done, interrupted = run_on_dask(client, record, jobs, budget.model_dump(), say)
    else:
        pool = _Pool(record, budget, cluster_factory, say, len(jobs))
        interrupted = pool.run(jobs, slots or _default_slots())
        done = pool.rows
    rows = sorted(done, key=lambda r: (r["llm"], r["task"], r["repeat"]))
    problem = record.close(per_llm(rows, ks), interrupted)
    if problem:
        say(problem)
    return EvalResult(record.experiment_id, rows, ks, interrupted, settings)


class _Pool:
    """The runs of one evaluation, ``slots`` at a time, stoppable from the main thread."""

    def __init__(self, record: EvalRecord, budgets: Budgets,
                 cluster_factory: Callable[[Topology], Any] | None,
                 log: Callable[[str], None], total: int) -> None:
        self.record, self.budgets, self.factory, self.log = record, budgets, cluster_factory, log
        self.total = total
        self.rows: list[dict[str, Any]] = []
        self.running: dict[int, Converger] = {}
        self.lock = threading.Lock()
        self.halted = threading.Event()

    def run(self, jobs: list[_Job], slots: int) -> bool:
        """Run ``jobs``; True if Ctrl-C cut it short."""
        # no `with`: on Ctrl-C the main thread must get control at once to stop the runs
        pool = ThreadPoolExecutor(max(1, slots), thread_name_prefix="antrieb-eval")
        futures: list[Future] = [pool.submit(self._one, job) for job in jobs]
        try:
            pending = set(futures)
            while pending:
                _done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            return False
        except KeyboardInterrupt:
            self.halted.set()
            for future in futures:
                future.cancel()
            with self.lock:
                for conv in self.running.values():
                    conv.stop("interrupted (Ctrl-C)")
            self.log("interrupted: stopping the running runs, keeping what finished")
            return True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, job: _Job) -> None:
        if self.halted.is_set():
            return
        meta = {"experiment_id": self.record.experiment_id, "experiment_index": job.index,
                "eval": {"llm": job.llm, "task": job.spec.name, "repeat": job.repeat}}
        self.record.update(job.index, status="running", started=time.time())
        try:
            conv = Converger(job.spec.task, provider=provider_for(job.llm, job.spec),
                             budgets=self.budgets, cluster_factory=self.factory,
                             run_id=job.run_id, meta=meta)
            with self.lock:
                self.running[job.index] = conv
                if self.halted.is_set():  # Ctrl-C came while it was being made
                    conv.stop("interrupted (Ctrl-C)")
            result = conv.run()
        except Exception as exc:  # the harness failed, not the model: say so, go on
            self.record.update(job.index, status="failed", finished=time.time(),
                               error=f"{type(exc).__name__}: {exc}"[:4000])
            self.log(f"{job.llm} {job.spec.name} #{job.repeat}: harness error: {exc}")
            return
        finally:
            with self.lock:
                self.running.pop(job.index, None)
        row = run_row(result, llm=job.llm, task=job.spec.name, repeat=job.repeat,
                      model=conv.provider.model)
        status = "stopped" if result.status == "stopped" else "ok"
        self.record.update(job.index, status=status, finished=time.time(),
                           run_dirs={result.run_id: result.record_dir or ""})
        with self.lock:
            self.rows.append(row)
            done = len(self.rows)
        self.log(f"[{done}/{self.total}] {job.llm} {job.spec.name} #{job.repeat}: "
                 f"{result.status} after {row['iterations']} iteration(s), "
                 f"{row['wall_s']:.0f}s")
