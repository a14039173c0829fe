"""Convergence: a task, the loop of fresh-cluster attempts, recovery, synthesis, proof.

Example::

    from antrieb.converge import Converger, Task

    task = Task(request="HAProxy load balancing to 2 nginx backends")
    result = Converger(task, provider="openai").run()
    result.status, result.reason, result.figures()
"""

from __future__ import annotations

from antrieb.converge.converger import Converger
from antrieb.converge.diagnose import choose_path, diagnose
from antrieb.converge.models import (
    AnsibleArtifacts,
    Budgets,
    Check,
    Expect,
    NodeDesign,
    ShellArtifacts,
    Task,
    Topology,
)
from antrieb.converge.results import Diagnosis, Iteration, Recovery, RunResult

__all__ = [
    "AnsibleArtifacts",
    "Budgets",
    "Check",
    "Converger",
    "Diagnosis",
    "Expect",
    "Iteration",
    "NodeDesign",
    "Recovery",
    "RunResult",
    "ShellArtifacts",
    "Task",
    "Topology",
    "choose_path",
    "diagnose",
]
