"""The run record: one folder per run under ``<cache>/runs/<run_id>/``.

- ``run.json``: the task, the state (``running`` or the final status), the budgets and
  the result so far; rewritten after every step, so a crashed process still leaves a
  record that says how far it got.
- ``events.jsonl``: every event of the run, one JSON object a line, appended as it
  happens (prompts, answers, commands, outputs, timings, decisions).
- ``llm.jsonl``: the LLM recording (:class:`antrieb.llm.RecordingProvider`), which
  ``antrieb runs replay ID`` plays back offline.

Example::

    for row in list_runs():
        print(row["run_id"], row["state"], row["task"])
    record = load_run("r20261130-051200-ab12")
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from antrieb import config, events
from antrieb.errors import TaskError, UnknownNameError


def runs_dir() -> Path:
    path = config.cache_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_id() -> str:
    """Sortable by time, unique enough: ``r20261130-051200-ab12``."""
    return datetime.now(UTC).strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class RunRecorder:
    """Writes one run's record as it goes. Thread-safe (events come from many threads)."""

    def __init__(self, run_id: str, task: dict[str, Any], meta: dict[str, Any],
                 root: Path | None = None) -> None:
        self.run_id = run_id
        self.dir = (root or runs_dir()) / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.llm_path = self.dir / "llm.jsonl"
        self._lock = threading.Lock()
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._base = {"run_id": run_id, "task": task, "created": time.time(), **meta}
        self.write("running", None)

    def base(self) -> dict[str, Any]:
        """What ``run.json`` says besides state and result (task, meta, folder)."""
        return {**self._base, "dir": str(self.dir)}

    def event(self, event: events.Event) -> None:
        line = event.model_dump_json()
        with self._lock:
            if not self._events.closed:
                self._events.write(line + "\n")
                self._events.flush()

    def write(self, state: str, result: dict[str, Any] | None) -> None:
        """Replace ``run.json`` atomically (a reader never sees half a file)."""
        body = {**self._base, "state": state, "updated": time.time(), "result": result}
        tmp = self.dir / "run.json.tmp"
        with self._lock:
            tmp.write_text(json.dumps(body, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, self.dir / "run.json")

    def close(self) -> None:
        with self._lock:
            self._events.close()


def run_path(run_id: str, root: Path | None = None) -> Path:
    """The folder of a run: an id under the runs folder, or a run folder's own path (the
    recorded runs that ship with the examples live outside the cache)."""
    folder_like = "/" in run_id or run_id.startswith(".")
    if folder_like and "\0" not in run_id and (Path(run_id).expanduser() / "run.json").exists():
        return Path(run_id).expanduser()
    path = (root or runs_dir()) / run_id
    # an ID names a folder directly under runs/: "../x" must not reach beyond it
    if folder_like or "\0" in run_id or not run_id or not (path / "run.json").exists():
        known = [row["run_id"] for row in list_runs(root)]
        raise UnknownNameError("run", run_id, known)
    return path


def load_run(run_id: str, root: Path | None = None) -> dict[str, Any]:
    """The ``run.json`` of a run, with ``dir`` added."""
    path = run_path(run_id, root)
    try:
        data = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TaskError(str(path / "run.json"), f"not JSON: {exc}") from exc
    data["dir"] = str(path)
    return data


def load_events(run_id: str, root: Path | None = None) -> list[dict[str, Any]]:
    path = run_path(run_id, root) / "events.jsonl"
    out = []
    # "\n" only: splitlines() also breaks at U+0085/U+2028/U+2029, which JSON leaves raw
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a crashed run
    return out


def list_runs(root: Path | None = None) -> list[dict[str, Any]]:
    """One summary row per recorded run, newest first."""
    rows = []
    for path in sorted((root or runs_dir()).glob("*/run.json"), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        result = data.get("result") or {}
        rows.append({
            "run_id": data.get("run_id", path.parent.name),
            "task": (data.get("task") or {}).get("name", ""),
            "state": data.get("state", "?"),
            "reason": result.get("reason", ""),
            "iterations": len(result.get("iterations") or []),
            "created": data.get("created"),
            "replay_of": data.get("replay_of"),
        })
    return rows


def experiment_meta() -> dict[str, Any]:
    """``ANTRIEB_EXPERIMENT="<experiment_id>/<index>"`` (set by antrieb.notebook's
    experiments for the papermill kernel) tags the run with its experiment entry."""
    xid, _, index = os.environ.get("ANTRIEB_EXPERIMENT", "").partition("/")
    if not xid or not index.isdigit():
        return {}
    return {"experiment_id": xid, "experiment_index": int(index)}
