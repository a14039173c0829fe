"""A provider that knows the answer: it replies to every request with fixed artifacts.

The evaluation harness is tested against known answers with it: given a task's reference
solution, every request of the engine (design, retry, troubleshoot, synthesis) gets that
solution in the shape the request asks for, so a correct harness scores 1.0; given the
task's near miss, it scores 0.0. What the oracle does not know it refuses with an
:class:`~antrieb.errors.LLMError` instead of inventing it: a failure class (``classify``:
the diagnosis then keeps the rules' verdict) or a purpose the engine may add later (the
run then ends with that reason, loudly).

Example::

    from antrieb.llm.oracle import AnswerProvider

    llm = AnswerProvider({"tool": "shell", "scripts": {"web": "#!/bin/bash\\n..."}})
    Converger(task, provider=llm).run().status   # "converged" if the artifacts are right
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from antrieb.errors import LLMError
from antrieb.llm.base import Completion, Message, Usage

# what the oracle says it is doing, in the fields the engine's answers have for it
_SAYS = "the known answer, given as is (no model was asked)"


class AnswerProvider:
    """Answers each request with ``artifacts`` (a JSON-able mapping: shell scripts or an
    Ansible playbook, as in :class:`antrieb.converge.ShellArtifacts`).

    ``design`` gets ``{"artifacts", "notes"}`` plus ``topology``/``checks`` when given
    (for tasks that leave them to the model); ``retry`` ``{"explanation", "artifacts"}``;
    ``troubleshoot`` a fix at once (``{"action": "fix", ...}``), no command;
    ``synthesize`` ``{"artifacts", "notes"}``. Usage is reported as not measured, the
    time an answer took as 0: the figures of a run with an oracle are the VMs' alone.

    Example::

        llm = AnswerProvider(reference, name="oracle", model="nginx-static")
        llm.complete(messages, purpose="retry").text   # '{"explanation": ..., ...}'
    """

    def __init__(self, artifacts: dict[str, Any], *, name: str = "oracle",
                 model: str = "reference", topology: dict[str, Any] | None = None,
                 checks: list[dict[str, Any]] | None = None) -> None:
        if not isinstance(artifacts, dict) or "tool" not in artifacts:
            raise TypeError("artifacts must be a mapping with a 'tool' "
                            "(ShellArtifacts/AnsibleArtifacts as JSON)")
        self.artifacts = artifacts
        self.name, self.model = name, model
        self.topology, self.checks = topology, checks
        self.calls: list[str] = []  # the purposes asked, in order
        self._answers: dict[str, Callable[[], dict[str, Any]]] = {
            "design": self._design,
            "retry": lambda: {"explanation": _SAYS, "artifacts": self.artifacts},
            "troubleshoot": lambda: {"action": "fix", "explanation": _SAYS,
                                     "artifacts": self.artifacts},
            "synthesize": lambda: {"artifacts": self.artifacts, "notes": _SAYS},
        }

    def __repr__(self) -> str:
        return f"AnswerProvider(name={self.name!r}, model={self.model!r})"

    def _design(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"artifacts": self.artifacts, "notes": _SAYS}
        if self.topology is not None:
            answer["topology"] = self.topology
        if self.checks is not None:
            answer["checks"] = self.checks
        return answer

    def complete(self, messages: list[Message], *, purpose: str) -> Completion:
        """The known answer for ``purpose`` as JSON text; :class:`LLMError` for a purpose
        it has no answer to."""
        self.calls.append(purpose)
        make = self._answers.get(purpose)
        if make is None:
            raise LLMError(f"{self.name} knows the task's artifacts, not an answer for "
                           f"{purpose!r}", provider=self.name)
        started = time.monotonic()
        text = json.dumps(make(), indent=1)
        return Completion(text=text, model=self.model, usage=Usage(measured=False),
                          seconds=time.monotonic() - started, finish_reason="stop")
