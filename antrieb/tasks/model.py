"""A catalogue task: a converge :class:`~antrieb.converge.models.Task` with fixed topology
and checks, and its two known answers.

- ``reference``: artifacts that pass every check (on real VMs: ``antrieb tasks verify``);
- ``near_miss``: artifacts a model could well write that fail at least one check (or the
  apply, or a gate of the proof), with ``near_miss_why`` saying what they get wrong.

Together they show that the checks can be met and are not met by anything: the harness
(:mod:`antrieb.eval`) is then tested against them with the answer providers of
:mod:`antrieb.llm.oracle`.

Example::

    spec = load_task("nginx-static")
    spec.task.checks[0].command, spec.near_miss_why
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from antrieb.converge.models import Artifacts, Task, check_references

Category = Literal["single-host service", "multi-node networking", "stateful cluster"]
CATEGORIES: tuple[str, ...] = ("single-host service", "multi-node networking",
                               "stateful cluster")


class CatalogueTask(BaseModel):
    """One task of the catalogue with its reference and its near miss."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    category: Category
    task: Task
    reference: Artifacts
    near_miss: Artifacts
    near_miss_why: str = Field(min_length=10)
    example: str | None = None  # the curated example this task is, if any
    source: str = ""  # the file it was read from

    @model_validator(mode="after")
    def _complete(self) -> CatalogueTask:
        task = self.task
        if task.topology is None or not task.checks:
            raise ValueError("a catalogue task fixes its topology and its checks: the "
                             "model writes the artifacts, not what they are judged by")
        if task.artifacts is not None:
            raise ValueError("a catalogue task brings no code of its own ('task.artifacts'): "
                             "its answers are 'reference' and 'near_miss'")
        for label, artifacts in (("reference", self.reference), ("near_miss", self.near_miss)):
            if artifacts.tool != task.tool:
                raise ValueError(f"{label} uses {artifacts.tool!r}, the task's tool is "
                                 f"{task.tool!r}")
            try:
                check_references(task.topology, task.checks, artifacts)
            except ValueError as exc:
                raise ValueError(f"{label}: {exc}") from None
        if self.reference == self.near_miss:
            raise ValueError("the near miss is the reference itself")
        return self

    @property
    def nodes(self) -> list[str]:
        assert self.task.topology is not None
        return self.task.topology.names()

    def summary(self) -> dict[str, object]:
        """One row for listings (``antrieb tasks list --json``)."""
        assert self.task.topology is not None
        return {"name": self.name, "title": self.title, "category": self.category,
                "tool": self.task.tool, "nodes": self.nodes,
                "images": sorted({n.image for n in self.task.topology.nodes}),
                "checks": len(self.task.checks), "near_miss": self.near_miss_why,
                "example": self.example}
