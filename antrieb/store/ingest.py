"""Filling the store from files and from another store; all of it idempotent.

- :func:`ingest_run`: a run record folder (``run.json`` + ``events.jsonl``), e.g. a run
  made before the store existed, on another machine, or the examples' recorded runs.
- :func:`ingest_experiment`: an ``experiment.json`` of a papermill experiment;
  :func:`ingest_point`: one grid point of it, as the Dask worker running it writes it.
- :func:`export`: every row of one store into another (SQLite -> PostgreSQL for
  Grafana); keys decide what is already there, so running it twice changes nothing.

Example::

    ingest_run("antrieb/examples/nginx-lb/run")
    ingest_experiment(cache_dir() / "experiments/e1/experiment.json")
    export(to="postgresql://grafana@localhost/antrieb")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from antrieb.errors import TaskError
from antrieb.store.db import Database, connect, redact_url
from antrieb.store.schema import PRIMARY_KEYS, TABLES
from antrieb.store.writer import RunWriter, redact, secrets_to_hide


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise TaskError(str(path), f"not JSON: {exc}") from exc


def ingest_run(run_dir: str | Path, *, db: Database | None = None) -> str:
    """Import one run record folder; returns its run ID. Importing again adds nothing
    (a run that went on since is completed). A torn last line (a crashed run) is skipped.
    """
    folder = Path(run_dir)
    if folder.name == "run.json":
        folder = folder.parent
    record = _read_json(folder / "run.json")
    if not isinstance(record, dict) or not record.get("run_id"):
        raise TaskError(str(folder / "run.json"), "not a run record (no run_id)")
    record.setdefault("dir", str(folder.resolve()))
    own = db is None
    db = db or connect()
    try:
        with db.batch():
            writer = RunWriter(db, record["run_id"], record)
            events_path = folder / "events.jsonl"
            if events_path.exists():
                # "\n" only: splitlines() also breaks at U+0085/U+2028 inside JSON strings
                for line in events_path.read_text(encoding="utf-8").split("\n"):
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(ev, dict):
                        writer.event(ev)
            writer.finish(record)
    finally:
        if own:
            db.close()
    return str(record["run_id"])


def ingest_experiment(path: str | Path, *, db: Database | None = None) -> None:
    """Import an ``experiment.json``: the experiment, each grid point with its
    parameters and status, and the runs it started (their records are imported too
    when they are in the runs folder). Importing again updates, never duplicates."""
    path = Path(path)
    if path.is_dir():
        path = path / "experiment.json"
    data = _read_json(path)
    if not isinstance(data, dict) or not data.get("experiment_id"):
        raise TaskError(str(path), "not an experiment (no experiment_id)")
    grid = data.get("grid") or []
    if not isinstance(grid, list):
        raise TaskError(str(path), "'grid' must be a list")
    exp_id = str(data["experiment_id"])
    secrets = secrets_to_hide()
    own = db is None
    db = db or connect()
    try:
        with db.batch():
            db.upsert("experiments", {"experiment_id": exp_id, "notebook": data.get("notebook"),
                                      "created": data.get("created"), "points": len(grid),
                                      "path": str(path.resolve())})
            for i, point in enumerate(grid):
                if not isinstance(point, dict):
                    raise TaskError(str(path), f"grid[{i}] is not a mapping")
                _ingest_point(db, exp_id, point, i, secrets, path.parent)
    finally:
        if own:
            db.close()


def ingest_point(experiment: dict[str, Any], point: dict[str, Any], *,
                 db: Database | None = None) -> None:
    """One grid point of an experiment still running, as the Dask worker that runs it
    writes it (when the cell starts and when it ends): the experiment's row, the point
    (status, worker, host), its parameters and its runs. ``experiment`` has
    ``experiment_id``, ``notebook``, ``created`` and ``points`` (the grid's size). The
    client's :func:`ingest_experiment` of the finished record later writes the same keys.
    """
    exp_id = str(experiment["experiment_id"])
    own = db is None
    db = db or connect()
    try:
        with db.batch():
            # no path: the record lives with the client; an existing path is kept
            db.upsert("experiments", {"experiment_id": exp_id,
                                      "notebook": experiment.get("notebook"),
                                      "created": experiment.get("created"),
                                      "points": experiment.get("points"), "path": None})
            _ingest_point(db, exp_id, point, int(point["index"]), secrets_to_hide(),
                          Path("/"))
    finally:
        if own:
            db.close()


def _ingest_point(db: Database, exp_id: str, point: dict[str, Any], i: int,
                  secrets: list[str], base: Path) -> None:
    from antrieb.converge.record import runs_dir

    idx = int(point.get("index", i))
    run_dirs = point.get("run_dirs") or {}  # recorded runs shown, living outside runs/
    params = point.get("parameters") or {}
    if not isinstance(params, dict):
        raise TaskError(exp_id, f"grid[{i}].parameters is not a mapping")
    label = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    db.upsert("experiment_points", {
        "experiment_id": exp_id, "idx": idx, "status": point.get("status"),
        "error": redact(point.get("error"), secrets), "output": point.get("output"),
        "started": point.get("started"), "finished": point.get("finished"),
        "parameters": params, "label": label or f"#{idx}", "mode": point.get("mode"),
        # on Dask: who ran it, and after how many tries (absent when run locally)
        "worker": point.get("worker"), "host": point.get("host"),
        "attempts": len(point["attempts"]) if isinstance(point.get("attempts"), list)
        else None})
    db.upsert_many("experiment_parameters", [
        {"experiment_id": exp_id, "idx": idx, "name": str(k), "value": json.dumps(v),
         "value_num": float(v) if isinstance(v, int | float) and not isinstance(v, bool)
         else None} for k, v in params.items()])
    for run_id in point.get("run_ids") or []:
        db.upsert("experiment_runs", {"experiment_id": exp_id, "idx": idx,
                                      "run_id": str(run_id)})
        given = run_dirs.get(str(run_id)) if isinstance(run_dirs, dict) else None
        folder = base / given if given else runs_dir() / str(run_id)
        if (folder / "run.json").exists():
            ingest_run(folder, db=db)
        # a live run's record names its experiment itself; a recorded run shown by
        # several experiments keeps the first (experiment_runs has every link)
        db.execute("UPDATE runs SET experiment_id = ?, experiment_index = ? WHERE run_id = ? "
                   "AND experiment_id IS NULL", (exp_id, idx, str(run_id)))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def export(to: str, *, source: str | None = None) -> dict[str, int]:
    """Copy every row of the store ``source`` (default: the local one) into ``to``.

    Rows already in ``to`` (same key) are updated, so a run that was still going at the
    last export is completed; nothing is duplicated. Returns the row counts of ``to``.
    """
    src = connect(source)
    try:
        dst = connect(to)
    except BaseException:
        src.close()
        raise
    try:
        if src.url == dst.url:
            raise TaskError(redact_url(to), "export to the store it reads from")
        with dst.batch():
            for table in TABLES:
                names, rows = src.rows(f"SELECT * FROM {table} ORDER BY "
                                       f"{', '.join(PRIMARY_KEYS[table])}")
                for start in range(0, len(rows), 500):
                    chunk = rows[start:start + 500]
                    dst.upsert_many(table, [dict(zip(names, r, strict=True)) for r in chunk])
        return {t: dst.count(t) for t in TABLES}
    finally:
        src.close()
        dst.close()
