"""The curated examples: each a task with checks and a hand-authored conversation.

An example is a folder ``antrieb/examples/<name>/`` with

- ``task.yaml``: ``title``, ``description``, ``expected_paths`` (the recovery paths its
  conversation leads to) and ``task`` (a :class:`~antrieb.converge.models.Task`);
- ``conversation.yaml``: a replay recording (:mod:`antrieb.llm.replay`) whose first
  attempts make the mistakes models really make. For readability an exchange may give
  ``answer`` (a mapping) instead of ``response`` (its JSON text).
- ``run/``: the record of one real run of the example on VMs (``run.json``,
  ``events.jsonl``, ``llm.jsonl``; see :mod:`antrieb.converge.record`), kept so that what
  only renders a run (widgets, reports, dashboards) has a real one to show without VMs.

Examples run offline: the model is the recording, the VMs are real.

Example::

    from antrieb.examples import load_example

    ex = load_example("nginx-lb")
    result = ex.converger().run()
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from antrieb.errors import TaskError, UnknownNameError

HERE = Path(__file__).resolve().parent


class Example(BaseModel):
    name: str
    title: str
    description: str
    expected_paths: list[str]
    folder: str
    task: Any  # antrieb.converge.models.Task (kept lazy: the catalogue loads fast)

    def recording(self) -> Any:
        """The conversation as a :class:`antrieb.llm.Recording`."""
        return load_conversation(Path(self.folder) / "conversation.yaml")

    def provider(self) -> Any:
        from antrieb.llm import ReplayProvider

        return ReplayProvider(self.recording())

    def converger(self, **kwargs: Any) -> Any:
        """A :class:`~antrieb.converge.Converger` of this example with its recording."""
        from antrieb.converge import Converger

        meta = {"example": self.name, **(kwargs.pop("meta", None) or {})}
        return Converger(self.task, provider=self.provider(), meta=meta, **kwargs)

    def reference_run(self) -> Path | None:
        """The folder of this example's recorded real run, if one ships with it."""
        folder = Path(self.folder) / "run"
        return folder if (folder / "run.json").exists() else None

    def summary(self) -> dict[str, Any]:
        t = self.task
        return {"name": self.name, "title": self.title, "description": self.description,
                "tool": t.tool, "nodes": [n.model_dump() for n in t.topology.nodes]
                if t.topology else [], "checks": len(t.checks),
                "expected_paths": self.expected_paths}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(str(path), str(exc)) from exc


def load_conversation(path: Path) -> Any:
    """Read a hand-authored recording, turning ``answer`` mappings into responses."""
    from antrieb.llm import Recording

    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("exchanges"), list):
        raise TaskError(str(path), "expected a mapping with a list of 'exchanges'")
    for i, ex in enumerate(data["exchanges"]):
        if isinstance(ex, dict) and "answer" in ex:
            if "response" in ex:
                raise TaskError(str(path), f"exchange {i}: give 'answer' or 'response', "
                                "not both")
            ex["response"] = json.dumps(ex.pop("answer"), indent=1)
    try:
        return Recording.model_validate(data)
    except ValidationError as exc:
        raise TaskError(str(path), str(exc)) from exc


def names() -> list[str]:
    return sorted(p.parent.name for p in HERE.glob("*/task.yaml"))


def load_example(name: str) -> Example:
    """The example ``name``; :class:`UnknownNameError` lists the known ones."""
    from antrieb.converge.models import Task

    folder = HERE / name
    if name not in names():
        raise UnknownNameError("example", name, names())
    data = _read_yaml(folder / "task.yaml")
    if not isinstance(data, dict) or "task" not in data:
        raise TaskError(str(folder / "task.yaml"), "expected a mapping with 'task'")
    try:
        task = Task.model_validate(data["task"])
    except ValidationError as exc:
        raise TaskError(str(folder / "task.yaml"), str(exc)) from exc
    return Example(name=name, title=data.get("title", name),
                   description=" ".join(str(data.get("description", "")).split()),
                   expected_paths=list(data.get("expected_paths", [])),
                   folder=str(folder), task=task)


def list_examples() -> list[Example]:
    return [load_example(n) for n in names()]
