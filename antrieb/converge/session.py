"""What the steps of a run (design, recovery, synthesis) need of the run they belong to.

A :class:`~antrieb.converge.converger.Converger` is one; the steps depend on this
Protocol instead of on the converger, which calls them.
"""

from __future__ import annotations

from typing import Any, Protocol

from antrieb.converge.models import Budgets, Check, Task, Topology
from antrieb.converge.results import Iteration, RunResult
from antrieb.llm import Message


class Session(Protocol):
    task: Task
    budgets: Budgets
    result: RunResult
    run_id: str
    topology: Topology | None
    checks: list[Check]
    _cluster: Any  # the live cluster of the current iteration, if any

    def ask(self, messages: list[Message], schema: Any, purpose: str,
            iteration: Iteration | None = None) -> Any:
        """Ask the model (validated against the task), timed and budget-checked."""

    def _checkpoint(self) -> None:
        """Raise if the run was stopped or a budget ran out."""

    def _save(self, state: str = "running") -> None:
        """Write the run record as it is now."""

    def _teardown(self, it: Iteration | None = None) -> None:
        """Take the current cluster down (timed into ``it``)."""
