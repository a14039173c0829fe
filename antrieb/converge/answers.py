"""The shapes of the model's answers, one per purpose, validated against the task.

Each is parsed by :func:`antrieb.llm.ask` inside :func:`~antrieb.converge.models.constrained`,
so "7 nodes", "image debian-99", "a script for a role no node has" or "the wrong
tool" fail validation with a reason the model gets back to correct itself.

Example::

    with constrained(task.constraints()):
        answer = ask(llm, messages, RetryAnswer, purpose="retry")
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from antrieb.converge.models import (
    AnsibleArtifacts,
    Artifacts,
    Check,
    ShellArtifacts,
    Strict,
    Topology,
    check_references,
    current_constraints,
)


def _tool_allowed(artifacts: ShellArtifacts | AnsibleArtifacts) -> None:
    tool = current_constraints().tool
    if tool is not None and artifacts.tool != tool:
        raise ValueError(f"the task asks for tool {tool!r}, the artifacts use "
                         f"{artifacts.tool!r}")
    nodes = current_constraints().nodes
    if isinstance(artifacts, AnsibleArtifacts) and nodes and artifacts.control not in nodes:
        raise ValueError(f"control node {artifacts.control!r} is not one of {list(nodes)}")


class DesignAnswer(Strict):
    """The environment the model proposes: topology, artifacts and checks.

    Parts the task already gives may be left out (they are ignored if present).
    """

    topology: Topology | None = None
    artifacts: Artifacts
    checks: list[Check] = Field(default_factory=list)
    notes: str = ""

    @model_validator(mode="after")
    def _complete(self) -> DesignAnswer:
        need = current_constraints().need
        if "topology" in need and self.topology is None:
            raise ValueError("'topology' is required: the task gives none")
        if "checks" in need and not self.checks:
            raise ValueError("'checks' is required: the task gives none; propose checks "
                             "that prove the request is met")
        _tool_allowed(self.artifacts)
        if self.topology is not None and "topology" in need:
            check_references(self.topology, self.checks, self.artifacts)
        else:
            nodes = current_constraints().nodes or ()
            for check in self.checks:
                if nodes and check.node not in nodes:
                    raise ValueError(f"check {check.name!r} runs on {check.node!r}, which is "
                                     f"not a node; nodes: {list(nodes)}")
        return self


class RetryAnswer(Strict):
    """Corrected artifacts after a failed attempt, and what was wrong."""

    explanation: str = ""
    artifacts: Artifacts

    @model_validator(mode="after")
    def _tool(self) -> RetryAnswer:
        _tool_allowed(self.artifacts)
        return self


class RunCommand(Strict):
    """Troubleshooting: run one command on one node and send me the output."""

    action: Literal["run"] = "run"
    node: str
    command: str = Field(min_length=1, max_length=4000)
    why: str = ""

    @model_validator(mode="after")
    def _node(self) -> RunCommand:
        nodes = current_constraints().nodes
        if nodes and self.node not in nodes:
            raise ValueError(f"node {self.node!r} does not exist; nodes: {list(nodes)}")
        return self


class Fix(Strict):
    """Troubleshooting ends: the artifacts with the fix applied, and what it was."""

    action: Literal["fix"] = "fix"
    explanation: str = ""
    artifacts: Artifacts

    @model_validator(mode="after")
    def _tool(self) -> Fix:
        _tool_allowed(self.artifacts)
        return self


TroubleshootAnswer = Annotated[RunCommand | Fix, Field(discriminator="action")]


class SynthesisAnswer(Strict):
    """The one clean script per role (or one playbook) distilled from what worked."""

    artifacts: Artifacts
    notes: str = ""

    @model_validator(mode="after")
    def _tool(self) -> SynthesisAnswer:
        _tool_allowed(self.artifacts)
        return self
