"""Reading the store: pandas DataFrames for notebooks, plain dicts for the CLI and MCP.

Example::

    import antrieb
    df = antrieb.runs()                       # one row per run, newest first
    df.groupby("status").size()
    table("recovery_decisions", run_id=df.run_id[0])
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from antrieb.errors import UnknownNameError
from antrieb.store.db import Database, StoreError, connect
from antrieb.store.schema import TABLES

RUN_COLUMNS = ("run_id, task_name, status, reason, iterations, created, finished, total_s, "
               "in_vm_s, llm_s, install_s, vm_seconds, prompt_tokens, completion_tokens, "
               "llm_calls, provider, model, tool, example, replay_of, experiment_id, "
               "experiment_index, request")


def _with_db(url: str | None, db: Database | None):
    return (db, False) if db is not None else (connect(url), True)


def runs(url: str | None = None, *, status: str | None = None, limit: int | None = None,
         db: Database | None = None) -> Any:
    """All runs of the store as a pandas DataFrame, newest first.

    Columns: run_id, task_name, status, reason, iterations, created, finished (epoch
    seconds; ``created_at`` as datetimes), total_s, in_vm_s, llm_s, install_s,
    vm_seconds, tokens, provider, model, tool, example, experiment_id, ... and
    ``paths`` (the recovery path of each failed iteration, comma separated).
    """
    import pandas as pd

    db, own = _with_db(url, db)
    try:
        sql = (f"SELECT {RUN_COLUMNS}, (SELECT COUNT(*) FROM recovery_decisions d WHERE "
               f"d.run_id = runs.run_id) AS recoveries FROM runs")
        params: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY created DESC, run_id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        df = db.query(sql, params)
        paths = db.query("SELECT run_id, path FROM recovery_decisions ORDER BY run_id, "
                         "iteration, at")
    finally:
        if own:
            db.close()
    joined = paths.groupby("run_id")["path"].agg(",".join) if len(paths) else {}
    df["paths"] = [joined.get(r, "") if len(paths) else "" for r in df["run_id"]]
    # NaN where no usage was measured (hand-written recordings), not an invented 0
    df["tokens"] = df["prompt_tokens"] + df["completion_tokens"].fillna(0)
    df["created_at"] = pd.to_datetime(df["created"], unit="s", utc=True)
    return df


def table(name: str, *, run_id: str | None = None, url: str | None = None,
          db: Database | None = None) -> Any:
    """One table (optionally one run's rows) as a DataFrame."""
    if name not in TABLES:
        raise StoreError(url or "store", f"no table {name!r}; tables: {', '.join(TABLES)}")
    db, own = _with_db(url, db)
    try:
        sql = f"SELECT * FROM {name}"
        if run_id is not None:
            if name.startswith("experiment"):
                raise StoreError(db.url, f"{name} has no run_id")
            sql += " WHERE run_id = ?"
        return db.query(sql, [run_id] if run_id is not None else [])
    finally:
        if own:
            db.close()


def list_runs(limit: int = 50, *, url: str | None = None,
              db: Database | None = None) -> list[dict[str, Any]]:
    """Newest runs first, one summary dict each (status, iterations, timings, tokens)."""
    db, own = _with_db(url, db)
    try:
        return db.dicts(
            "SELECT run_id, task_name, status, reason, iterations, created, total_s, "
            "prompt_tokens, completion_tokens, example, experiment_id FROM runs "
            f"ORDER BY created DESC, run_id DESC LIMIT {int(limit)}")
    finally:
        if own:
            db.close()


_DETAIL = {
    "iterations": "SELECT iteration, phase, passed, started, finished, nodes, cluster_up_s, "
                  "apply_s, checks_s, install_s, iteration_s, explanation, fresh_server, "
                  "idempotent, reboot, reboot_s FROM iterations "
                  "WHERE run_id = ? ORDER BY iteration",
    "failures": "SELECT iteration, failure_class, node, summary, evidence FROM failures "
                "WHERE run_id = ? ORDER BY iteration, at",
    "decisions": "SELECT iteration, path, failure_class, reason FROM recovery_decisions "
                 "WHERE run_id = ? ORDER BY iteration, at",
    "steps": "SELECT iteration, node, role, command, exit_status, seconds, install_s, "
             "output FROM steps WHERE run_id = ? ORDER BY at",
    "checks": "SELECT iteration, name, node, rerun, after_reboot, passed, detail, seconds "
              "FROM checks "
              "WHERE run_id = ? ORDER BY at",
    "residue": "SELECT iteration, node, kind, item, detail FROM residue WHERE run_id = ? "
               "ORDER BY iteration, node, kind, item",
    "troubleshoot": "SELECT iteration, turn, node, command, why, exit_status, output FROM "
                    "troubleshoot_turns WHERE run_id = ? ORDER BY at",
    "llm_calls": "SELECT iteration, purpose, model, attempt, ok, prompt_tokens, "
                 "completion_tokens, seconds FROM llm_calls WHERE run_id = ? ORDER BY at",
}
_JSON_FIELDS = {"nodes", "evidence", "final_artifacts", "findings", "task", "budgets"}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON_FIELDS & set(row):
        if isinstance(row[key], str):
            with contextlib.suppress(ValueError):
                row[key] = json.loads(row[key])
    return row


def get_run(run_id: str, *, url: str | None = None, db: Database | None = None,
            include: tuple[str, ...] = tuple(_DETAIL)) -> dict[str, Any]:
    """One run: its ``runs`` row (``iteration_count``) and lists of its iterations (with
    the proof's gates on the verify ones), failures, decisions, steps, checks, residue,
    troubleshoot turns and LLM calls."""
    db, own = _with_db(url, db)
    try:
        found = db.dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not found:
            known = [r["run_id"] for r in db.dicts(
                "SELECT run_id FROM runs ORDER BY created DESC LIMIT 20")]
            raise UnknownNameError("run", run_id, known)
        run = _decode(found[0])
        run["iteration_count"] = run.pop("iterations")  # "iterations" is the list below
        for part in include:
            run[part] = [_decode(r) for r in db.dicts(_DETAIL[part], [run_id])]
        return run
    finally:
        if own:
            db.close()
