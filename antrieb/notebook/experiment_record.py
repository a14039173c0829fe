"""The record of an experiment, shared by the local runner and the Dask one.

``experiments_dir()/<id>/experiment.json`` (layout in :mod:`antrieb.notebook.experiments`),
``links.jsonl`` (the recorded runs a notebook showed, written from inside the kernel),
and how a grid entry finds its runs. Split from the runners so that
:mod:`antrieb.notebook.experiments` and :mod:`antrieb.notebook.distributed` share it
without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from antrieb import config

ENV = "ANTRIEB_EXPERIMENT"


def experiments_dir() -> Path:
    path = config.cache_dir() / "experiments"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_experiment_id() -> str:
    return datetime.now(UTC).strftime("x%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def current_experiment() -> tuple[str, int] | None:
    """``(experiment_id, index)`` when this process runs inside an experiment."""
    value = os.environ.get(ENV, "")
    xid, _, index = value.partition("/")
    if not xid or not index.isdigit():
        return None
    return xid, int(index)


def note_recorded_run(run_id: str, folder: Path) -> None:
    """Inside an experiment: link the recorded run this notebook showed to its entry."""
    current = current_experiment()
    if current is None:
        return
    xid, index = current
    links = experiments_dir() / xid / "links.jsonl"
    links.parent.mkdir(parents=True, exist_ok=True)
    with open(links, "a", encoding="utf-8") as f:
        f.write(json.dumps({"index": index, "run_id": run_id,
                            "folder": str(Path(folder).resolve())}) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    path = folder / "experiment.json"
    tmp = folder / "experiment.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def linked_runs(xid: str, index: int) -> tuple[list[str], dict[str, str], str]:
    """Run ids of one entry: live runs tagged with it, and recorded runs it showed."""
    from antrieb.converge.record import runs_dir

    run_ids: list[str] = []
    dirs: dict[str, str] = {}
    for path in sorted(runs_dir().glob("*/run.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("experiment_id") == xid and data.get("experiment_index") == index:
            run_ids.append(str(data.get("run_id", path.parent.name)))
            dirs[run_ids[-1]] = str(path.parent)
    live = bool(run_ids)
    links = experiments_dir() / xid / "links.jsonl"
    recorded = False
    if links.exists():
        for line in links.read_text(encoding="utf-8").split("\n"):
            try:
                link = json.loads(line)
            except ValueError:
                continue  # an empty last line
            if link.get("index") == index and link.get("run_id") not in dirs:
                run_ids.append(str(link["run_id"]))
                dirs[str(link["run_id"])] = str(link.get("folder", ""))
                recorded = True
    mode = "live" if live and not recorded else "recorded" if recorded and not live \
        else "mixed" if live else "none"
    return run_ids, dirs, mode


def ingest(path: Path) -> str | None:
    """Hand the record to the run store if it has the hook (``antrieb.store``)."""
    try:
        from antrieb import store  # type: ignore[attr-defined]
    except ImportError:
        return None
    ingest = getattr(store, "ingest_experiment", None)
    if ingest is None:
        return None
    try:
        ingest(path)
    except Exception as exc:  # the experiment itself is done and recorded
        return f"run store ingest failed: {exc}"
    return None
