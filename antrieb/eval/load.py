"""Evaluations read back: a recorded evaluation, or any recorded runs, as an
:class:`~antrieb.eval.runner.EvalResult` (what notebooks compare offline).

Example::

    ev = load_eval()                    # the latest evaluation in the cache
    ev = load_eval("x20261203-101500-ab12")
    ev = eval_of_runs(["antrieb/examples/nginx-lb/run"])   # recorded runs of any kind
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from antrieb.converge.results import RunResult
from antrieb.errors import TaskError, UnknownNameError
from antrieb.eval.metrics import default_ks, run_row
from antrieb.eval.record import KIND
from antrieb.eval.runner import EvalResult
from antrieb.notebook.experiment_record import experiments_dir


def _evaluations() -> list[dict[str, Any]]:
    """Every recorded evaluation, newest first."""
    found = []
    for path in sorted(experiments_dir().glob("*/experiment.json"), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("kind") == KIND:
            found.append(data)
    return found


def list_evals() -> list[dict[str, Any]]:
    """One row per recorded evaluation: id, models, tasks, repeats, runs, interrupted."""
    return [{"experiment_id": d["experiment_id"], "created": d.get("created"),
             **{k: d.get("eval", {}).get(k) for k in ("llms", "tasks", "repeats")},
             "runs": sum(1 for e in d.get("grid") or [] if e.get("status") in ("ok", "stopped")),
             "interrupted": d.get("interrupted")} for d in _evaluations()]


def _read_run(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _row(record: dict[str, Any], llm: str, task: str, repeat: int) -> dict[str, Any] | None:
    result = record.get("result")
    if not isinstance(result, dict) or record.get("state") == "running":
        return None  # a run cut short by a crash: nothing to score
    parsed = RunResult.model_validate(result)
    return run_row(parsed, llm=llm, task=task, repeat=repeat, model=record.get("model"))


def load_eval(experiment_id: str | None = None) -> EvalResult:
    """A recorded evaluation (default: the latest), its figures computed again from the
    runs' own records."""
    evaluations = _evaluations()
    if experiment_id is None:
        if not evaluations:
            raise UnknownNameError("evaluation", "(latest)", [])
        data = evaluations[0]
    else:
        matching = [d for d in evaluations if d["experiment_id"] == experiment_id]
        if not matching:
            raise UnknownNameError("evaluation", experiment_id,
                                   [d["experiment_id"] for d in evaluations])
        data = matching[0]
    from antrieb.converge.record import runs_dir

    rows = []
    for entry in data.get("grid") or []:
        params = entry.get("parameters") or {}
        for run_id in entry.get("run_ids") or []:
            folder = Path((entry.get("run_dirs") or {}).get(run_id) or runs_dir() / run_id)
            record = _read_run(folder)
            row = record and _row(record, str(params.get("llm")), str(params.get("task")),
                                  int(params.get("repeat", 0)))
            if row:
                rows.append(row)
    settings = dict(data.get("eval") or {})
    return EvalResult(data["experiment_id"], rows, default_ks(int(settings.get("repeats", 1))),
                      bool(data.get("interrupted")), settings)


def eval_of_runs(folders: Iterable[str | Path], label: str | None = None) -> EvalResult:
    """Recorded runs of any origin scored like an evaluation: the model is ``label`` or
    the run's ``provider:model``, the task its task's name, repeats counted per pair."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    for folder in folders:
        record = _read_run(Path(folder))
        if record is None:
            raise TaskError(str(folder), "no readable run.json")
        meta = record.get("eval") or {}
        llm = label or meta.get("llm") or f"{record.get('provider')}:{record.get('model')}"
        task = str((record.get("task") or {}).get("name", "task"))
        repeat = seen.get((llm, task), 0)
        seen[(llm, task)] = repeat + 1
        row = _row(record, llm, task, repeat)
        if row:
            row["record_dir"] = str(Path(folder))
            rows.append(row)
    repeats = max(seen.values(), default=1)
    return EvalResult("(recorded runs)", rows, default_ks(repeats), False,
                      {"llms": sorted({r["llm"] for r in rows}),
                       "tasks": sorted({r["task"] for r in rows}), "repeats": repeats})
