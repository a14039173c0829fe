"""The run store: every run as rows, for pandas, Grafana and the MCP server.

SQLite by default (``<cache>/store.sqlite``, nothing to start); PostgreSQL by URL
(``ANTRIEB_STORE=postgresql://user@host/db``); ``ANTRIEB_STORE=off`` switches it off.
A run is written as its events arrive (:class:`LiveWriter`, attached by the
Converger), so a crashed kernel leaves a readable partial run. The schema is
versioned (:mod:`antrieb.store.schema`).

Example::

    import antrieb
    antrieb.runs()[["run_id", "task_name", "status", "iterations", "paths"]]

    from antrieb import store
    store.ingest_run("antrieb/examples/nginx-lb/run")     # a run record folder
    store.ingest_experiment("~/.cache/antrieb/experiments/e1/experiment.json")
    store.export(to="postgresql://grafana@localhost/antrieb")
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from antrieb.store.db import Database, StoreError, connect, default_url, redact_url
from antrieb.store.ingest import export, ingest_experiment, ingest_point, ingest_run
from antrieb.store.read import get_run, list_runs, runs, table
from antrieb.store.schema import LATEST, MIGRATIONS, TABLES


class LiveWriter:
    """The store side of a running Converger: never raises, never slows the run down
    for long. The first failure is reported once on stderr and the writer goes quiet;
    the run record on disk still has everything (``antrieb store import`` later)."""

    def __init__(self, run_id: str, record: dict[str, Any], url: str | None = None) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self._writer: Any = None
        self._db: Database | None = None
        url = url or default_url()
        if url == "off":
            return
        try:
            from antrieb.store.writer import RunWriter

            self._db = connect(url)
            self._writer = RunWriter(self._db, run_id, record)
        except Exception as exc:
            self._fail(exc)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def _fail(self, exc: BaseException) -> None:
        print(f"antrieb: run store disabled for run {self.run_id}: {exc} (the run record "
              f"keeps everything; `antrieb store import` loads it later)", file=sys.stderr)
        self._writer = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def event(self, event: Any) -> None:
        with self._lock:
            if self._writer is None:
                return
            try:
                self._writer.event(event)
            except Exception as exc:
                self._fail(exc)

    def finish(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._writer is None:
                return
            try:
                self._writer.finish(record)
            except Exception as exc:
                self._fail(exc)
            finally:
                if self._db is not None:
                    self._db.close()
                self._writer, self._db = None, None


__all__ = [
    "LATEST",
    "MIGRATIONS",
    "TABLES",
    "Database",
    "LiveWriter",
    "StoreError",
    "connect",
    "default_url",
    "export",
    "get_run",
    "ingest_experiment",
    "ingest_point",
    "ingest_run",
    "list_runs",
    "redact_url",
    "runs",
    "table",
]
