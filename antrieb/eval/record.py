"""An evaluation is an experiment: the same record, the same store tables, the same
Grafana dashboard as a papermill experiment (:mod:`antrieb.notebook.experiment_record`).

``<cache>/experiments/<id>/experiment.json`` with ``"kind": "eval"``: one grid entry per
run (parameters ``llm``, ``task``, ``repeat``; ``status`` ``ok`` when the run finished
whatever its outcome, ``stopped`` when Ctrl-C ended it, ``cancelled`` when it never
started, ``failed`` when the harness itself failed; ``run_ids`` its run), plus the
``eval`` settings and the ``summary`` per model. The runs record themselves (their
``run.json`` names the experiment and entry), so the store links them on ingest.

Example::

    record = EvalRecord.create(["oracle"], ["nginx-static"], 1, Budgets())
    index = record.add("oracle", "nginx-static", 0, run_id)
    record.finish(index, "ok")
"""

from __future__ import annotations

import threading
import time
from typing import Any

from antrieb.converge.models import Budgets
from antrieb.notebook.experiment_record import (
    experiments_dir,
    ingest,
    new_experiment_id,
    write_record,
)

KIND = "eval"


class EvalRecord:
    """The experiment record of one evaluation, written after every change (thread-safe:
    runs finish in worker threads)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.folder = experiments_dir() / data["experiment_id"]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.write()

    @classmethod
    def create(cls, llms: list[str], tasks: list[str], repeats: int,
               budgets: Budgets) -> EvalRecord:
        xid = new_experiment_id()
        return cls({"experiment_id": xid, "kind": KIND, "notebook": "antrieb eval",
                    "created": time.time(), "rerun_of": None, "interrupted": False,
                    "eval": {"llms": llms, "tasks": tasks, "repeats": repeats,
                             "budgets": budgets.model_dump()},
                    "grid": [], "summary": None})

    @property
    def experiment_id(self) -> str:
        return str(self.data["experiment_id"])

    def write(self) -> None:
        write_record(self.folder, self.data)

    def add(self, llm: str, task: str, repeat: int, run_id: str) -> int:
        """A queued run; returns its entry's index."""
        with self._lock:
            index = len(self.data["grid"])
            self.data["grid"].append({
                "index": index, "parameters": {"llm": llm, "task": task, "repeat": repeat},
                "output": None, "status": "queued", "error": None, "run_ids": [run_id],
                "run_dirs": {}, "mode": "live", "started": None, "finished": None})
            self.write()
            return index

    def update(self, index: int, **fields: Any) -> None:
        with self._lock:
            self.data["grid"][index].update(fields)
            self.write()

    def close(self, summary: list[dict[str, Any]], interrupted: bool) -> str | None:
        """The summary in, every entry still queued marked cancelled (and its run id
        dropped: that run never existed); handed to the run store. Returns the store's
        complaint, if any."""
        with self._lock:
            for entry in self.data["grid"]:
                if entry["status"] in ("queued", "running"):
                    entry["status"], entry["run_ids"] = "cancelled", []
            self.data["summary"], self.data["interrupted"] = summary, interrupted
            self.data["finished"] = time.time()
            self.write()
        return ingest(self.folder / "experiment.json")
