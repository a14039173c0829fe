"""Reading the catalogue: one YAML file a task under ``antrieb/tasks/catalogue/``.

A task of its own::

    title: nginx serving a static page
    category: single-host service          # or: multi-node networking, stateful cluster
    task: {request: ..., tool: shell, topology: {...}, checks: [...]}   # a converge Task
    reference: {tool: shell, scripts: {...}}
    near_miss:
      why: the page goes to /usr/share/nginx/html, which Debian's default site does not serve
      artifacts: {tool: shell, scripts: {...}}

A curated example (:mod:`antrieb.examples`) as a task: ``example: NAME`` and a
``category``; its task is the example's, its reference the final artifacts of the run
on real VMs that ships with it (``run/run.json``: synthesized, proven), its near miss
the first answer of its conversation, the mistake its run recovered from (or
``near_miss.artifacts`` where given).

Every task passes the static rule of :mod:`antrieb.tasks.trivial` or is refused
(:class:`~antrieb.errors.TaskRefused`).

Example::

    [spec.name for spec in list_tasks()]
    load_task("nginx-static").reference.texts()
    load_task("my-tasks/ftp.yaml")      # a task file of your own
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from antrieb.errors import TaskError, TaskRefused, UnknownNameError
from antrieb.tasks.model import CatalogueTask
from antrieb.tasks.trivial import trivial_reasons

CATALOGUE = Path(__file__).resolve().parent / "catalogue"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(str(path), str(exc)) from exc


def names() -> list[str]:
    """The names of the catalogue's tasks, sorted."""
    return sorted(p.stem for p in CATALOGUE.glob("*.yaml"))


def load_task(name: str) -> CatalogueTask:
    """A task of the catalogue by name, or a task file by path."""
    path = Path(name).expanduser()
    if name.endswith((".yaml", ".yml")) and path.is_file():
        return load_task_file(path)
    if name not in names():
        raise UnknownNameError("task", name, names())
    return load_task_file(CATALOGUE / f"{name}.yaml")


def list_tasks() -> list[CatalogueTask]:
    return [load_task(n) for n in names()]


def load_task_file(path: Path) -> CatalogueTask:
    """Read, validate and apply the static rule to one task file."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise TaskError(str(path), "expected a mapping (title, category, task, reference, "
                        "near_miss) or (example, category)")
    name = str(data.get("name") or path.stem)
    fields = _from_example(path, name, data) if "example" in data else _own(path, name, data)
    try:
        spec = CatalogueTask.model_validate({"name": name, "source": str(path), **fields})
    except ValidationError as exc:
        raise TaskError(str(path), _short(exc)) from None
    problems = refusals(spec)
    if problems:
        raise TaskRefused(str(path), problems)
    return spec


def _own(path: Path, name: str, data: dict[str, Any]) -> dict[str, Any]:
    near = data.get("near_miss")
    if not isinstance(near, dict) or "artifacts" not in near or "why" not in near:
        raise TaskError(str(path), "'near_miss' needs 'why' and 'artifacts'")
    task = data.get("task")
    if not isinstance(task, dict):
        raise TaskError(str(path), "'task' must be a mapping (a converge Task)")
    return {"title": data.get("title", name), "category": data.get("category"),
            "task": {"name": name, **task}, "reference": data.get("reference"),
            "near_miss": near["artifacts"], "near_miss_why": near["why"]}


def _from_example(path: Path, name: str, data: dict[str, Any]) -> dict[str, Any]:
    from antrieb.examples import load_example

    example = load_example(str(data["example"]))
    run = example.reference_run()
    if run is None:
        raise TaskError(str(path), f"example {example.name} ships no run record (run/)")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    result = record.get("result") or {}
    if result.get("status") != "converged" or not result.get("final"):
        raise TaskError(str(path), f"the shipped run of {example.name} did not converge: "
                        "it has no proven artifacts to be the reference")
    near = data.get("near_miss") or {}
    artifacts = near.get("artifacts") or _first_answer(example)
    if artifacts is None:
        raise TaskError(str(path), f"the conversation of {example.name} has no answer with "
                        "artifacts to be the near miss; give near_miss.artifacts")
    return {"title": data.get("title", example.title), "category": data.get("category"),
            "task": example.task.model_dump(mode="json"),
            "reference": result["final"], "near_miss": artifacts,
            "near_miss_why": near.get("why", ""), "example": example.name}


def _first_answer(example: Any) -> dict[str, Any] | None:
    """The artifacts of the first answer in the example's conversation: its mistake."""
    for exchange in example.recording().exchanges:
        try:
            answer = json.loads(exchange.response)
        except ValueError:
            continue
        if isinstance(answer, dict) and isinstance(answer.get("artifacts"), dict):
            return answer["artifacts"]
    return None


def _short(exc: ValidationError, limit: int = 6) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
             for e in exc.errors(include_url=False)[:limit]]
    return "; ".join(parts)


@cache
def image_packages(image: str) -> tuple[str, ...]:
    """What a fresh node of ``image`` has installed by its recipe (and every image has)."""
    from antrieb.vm.images import get_recipe
    from antrieb.vm.images.contents import REQUIRED_PACKAGES

    return tuple(sorted({*get_recipe(image).packages, *REQUIRED_PACKAGES}))


def refusals(spec: CatalogueTask) -> list[str]:
    """Why the static rule refuses ``spec`` (empty: accepted): each trivial check."""
    assert spec.task.topology is not None
    images = {n.name: n.image for n in spec.task.topology.nodes}
    problems = []
    for check in spec.task.checks:
        for reason in trivial_reasons(check, image_packages(images[check.node])):
            problems.append(f"check {check.name!r} on {check.node}: {reason}")
    return problems
