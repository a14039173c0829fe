"""Experiments: a notebook run through papermill once per parameter set, recorded.

An experiment is a folder ``<cache>/experiments/<experiment_id>/`` holding
``experiment.json`` (the record the run store ingests) and every executed notebook
under ``notebooks/``. Each grid entry runs with ``ANTRIEB_EXPERIMENT=<id>/<index>`` in
the kernel's environment, so live runs carry ``experiment_id``/``experiment_index`` in
their run record. A notebook in recorded mode starts no run: it shows a recorded
one, and :func:`note_recorded_run` links that recorded run's id to the entry
(``run_ids``, with ``mode: recorded`` and its folder in ``run_dirs``).

``experiment.json``::

    {"experiment_id", "notebook", "notebook_sha256", "created", "rerun_of",
     "grid": [{"index", "parameters", "output", "status": "ok"|"failed", "error",
               "run_ids", "run_dirs", "mode", "started", "finished",
               # only when run on Dask (antrieb.notebook.distributed):
               "worker", "host", "pid", "attempts": [{"worker", "host", "pid", "started"}],
               "earlier_run_ids": live runs of attempts lost with their worker}]}

Example::

    df = run_experiment("notebooks/experiment.ipynb", {"mode": "recorded"},
                        grid={"example": ["nginx-lb", "haproxy-nginx"]})
    df[["example", "status", "converged", "iterations"]]
    rerun_experiment(df.experiment_id[0])   # the same notebook and parameters again
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from antrieb.errors import TaskError, UnknownNameError
from antrieb.notebook.experiment_record import (
    ENV,
    experiments_dir,
    ingest,
    linked_runs,
    new_experiment_id,
    sha256,
    write_record,
)

# -- grids ------------------------------------------------------------------------------


def load_grid(path: str | Path) -> dict[str, Any] | list[dict[str, Any]]:
    """Read a grid file (YAML): a mapping of name -> list of values (every combination),
    a list of parameter mappings, or ``{parameters: {...}, grid: <either>}``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(str(path), f"unreadable grid file: {exc}") from exc
    if not isinstance(data, dict | list):
        raise TaskError(str(path), "a grid is a mapping of name -> values or a list of "
                        "parameter mappings")
    return data


def expand_grid(parameters: dict[str, Any] | None = None,
                grid: dict[str, Any] | list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
    """The parameter sets of an experiment: ``parameters`` merged into each grid entry."""
    base = dict(parameters or {})
    if isinstance(grid, dict) and ("grid" in grid or "parameters" in grid):
        base = {**dict(grid.get("parameters") or {}), **base}
        grid = grid.get("grid")
    if grid is None:
        return [base]
    if isinstance(grid, dict):
        names = list(grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        entries = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    elif isinstance(grid, list) and all(isinstance(e, dict) for e in grid):
        entries = [dict(e) for e in grid]
    else:
        raise TaskError("grid", "a grid is a mapping of name -> values or a list of "
                        "parameter mappings")
    if not entries:
        raise TaskError("grid", "the grid has no entries")
    return [{**entry, **base} for entry in entries]


# -- running ----------------------------------------------------------------------------


def run_experiment(notebook: str | Path, parameters: dict[str, Any] | None = None, *,
                   grid: dict[str, Any] | list[dict[str, Any]] | str | Path | None = None,
                   kernel: str | None = None, cwd: str | Path | None = None,
                   timeout: float | None = None, rerun_of: str | None = None,
                   log: Any = None, client: Any = None) -> Any:
    """Run ``notebook`` once per parameter set with papermill; returns the results as a
    pandas DataFrame (one row per entry). A failing entry is recorded and the rest go on.

    With ``client`` (a ``dask.distributed.Client``) each entry is one Dask task on a
    worker (:mod:`antrieb.notebook.distributed`); entries then also record the
    ``worker``/``host`` that ran them and every ``attempts`` (a retry after a lost worker).
    """
    import papermill

    source = Path(notebook).resolve()
    if not source.is_file():
        raise TaskError(str(notebook), "no such notebook")
    if isinstance(grid, str | Path):
        grid = load_grid(grid)
    entries = expand_grid(parameters, grid)
    if client is not None:  # before the record: a grid no worker can run is refused
        from antrieb.notebook.distributed import check_capacity

        note = check_capacity(client)
        if note and log:
            log(note)
    xid = new_experiment_id()
    folder = experiments_dir() / xid
    (folder / "notebooks").mkdir(parents=True)
    record: dict[str, Any] = {
        "experiment_id": xid, "notebook": str(source), "notebook_sha256": sha256(source),
        "created": time.time(), "rerun_of": rerun_of, "kernel": kernel, "grid": [],
    }
    write_record(folder, record)
    if client is not None:
        from antrieb.notebook.distributed import run_cells

        run_cells(client, source, entries, folder, record, kernel=kernel, cwd=cwd,
                  timeout=timeout, log=log)
        return _finish(folder, record, log)
    previous = os.environ.get(ENV)
    try:
        for index, params in enumerate(entries):
            output = folder / "notebooks" / f"{index:03d}-{source.stem}.ipynb"
            entry: dict[str, Any] = {"index": index, "parameters": params,
                                     "output": str(output), "status": "running",
                                     "error": None, "run_ids": [], "run_dirs": {},
                                     "mode": "none", "started": time.time(),
                                     "finished": None}
            record["grid"].append(entry)
            write_record(folder, record)
            if log:
                log(f"[{index + 1}/{len(entries)}] {source.name} {params}")
            os.environ[ENV] = f"{xid}/{index}"
            try:
                papermill.execute_notebook(
                    str(source), str(output), parameters=params, kernel_name=kernel,
                    cwd=str(cwd or source.parent), progress_bar=False,
                    execution_timeout=timeout, request_save_on_cell_execute=True)
                entry["status"] = "ok"
            except Exception as exc:  # PapermillExecutionError, a dead kernel, ...
                entry["status"], entry["error"] = "failed", f"{type(exc).__name__}: {exc}"[:4000]
            entry["finished"] = time.time()
            entry["run_ids"], entry["run_dirs"], entry["mode"] = linked_runs(xid, index)
            write_record(folder, record)
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
    return _finish(folder, record, log)


def _finish(folder: Path, record: dict[str, Any], log: Any) -> Any:
    path = write_record(folder, record)
    problem = ingest(path)
    if problem and log:
        log(problem)
    return experiment_frame(record)


def load_experiment(experiment_id: str) -> dict[str, Any]:
    path = experiments_dir() / experiment_id / "experiment.json"
    if not path.exists():
        known = sorted(p.parent.name for p in experiments_dir().glob("*/experiment.json"))
        raise UnknownNameError("experiment", experiment_id, known)
    return json.loads(path.read_text(encoding="utf-8"))


def list_experiments() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(experiments_dir().glob("*/experiment.json"), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        grid = data.get("grid") or []
        rows.append({"experiment_id": data.get("experiment_id"),
                     "notebook": data.get("notebook"), "created": data.get("created"),
                     "entries": len(grid), "ok": sum(e.get("status") == "ok" for e in grid),
                     "rerun_of": data.get("rerun_of")})
    return rows


def rerun_experiment(experiment_id: str, **kwargs: Any) -> Any:
    """Run a recorded experiment again: the same notebook, the same parameter sets."""
    record = load_experiment(experiment_id)
    notebook = Path(record["notebook"])
    if not notebook.is_file():
        raise TaskError(str(notebook), f"the notebook of experiment {experiment_id} is gone")
    entries = [e["parameters"] for e in record.get("grid") or []]
    if not entries:
        raise TaskError(experiment_id, "the experiment has no entries to re-run")
    kwargs.setdefault("kernel", record.get("kernel"))
    return run_experiment(notebook, grid=entries, rerun_of=experiment_id, **kwargs)


def _run_figures(folder: str) -> dict[str, Any]:
    path = Path(folder) / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    result = data.get("result") or {}
    its = result.get("iterations") or []
    timings = result.get("timings") or {}
    cost = result.get("cost") or {}
    return {"run_status": result.get("status"), "converged": result.get("status") ==
            "converged", "iterations": len(its),  # every fresh cluster, as on every surface
            "paths": [it["recovery"]["path"] for it in its if it.get("recovery")],
            "total_s": timings.get("total_s"), "llm_s": timings.get("llm_s"),
            "tokens": None if cost.get("prompt_tokens") is None  # not measured, not 0
            else cost["prompt_tokens"] + (cost.get("completion_tokens") or 0),
            "model": data.get("model"), "provider": data.get("provider")}


def experiment_frame(record: dict[str, Any] | str) -> Any:
    """One row per grid entry: its parameters as columns, status, output notebook,
    linked run ids and the figures of its (first) run."""
    import pandas as pd

    if isinstance(record, str):
        record = load_experiment(record)
    rows = []
    for entry in record.get("grid") or []:
        first = entry["run_ids"][0] if entry.get("run_ids") else None
        figures = _run_figures(entry.get("run_dirs", {}).get(first, "")) if first else {}
        rows.append({"experiment_id": record["experiment_id"], "index": entry["index"],
                     **entry["parameters"], "status": entry["status"],
                     "error": entry.get("error"), "mode": entry.get("mode"),
                     "run_ids": list(entry.get("run_ids") or []), **figures,
                     **({"worker": entry.get("worker"), "host": entry.get("host"),
                         "attempts": len(entry["attempts"])} if "attempts" in entry else {}),
                     "seconds": (entry["finished"] or 0) - entry["started"]
                     if entry.get("finished") else None,
                     "output": entry["output"]})
    return pd.DataFrame(rows)
