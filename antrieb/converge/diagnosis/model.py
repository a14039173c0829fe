"""The model classifies what no rule knows: one structured call with the evidence.

When the rule table leaves a failure ``unknown``, the failed step's or check's output
goes to the model once, with the list of classes and what each means for the path;
it answers with a class, the line that decided it and why. The diagnosis then records
``classified_by="model"``. A model that gives no usable answer leaves it ``unknown``
(retry with the full logs): classification never ends a run. Like every model call,
it is recorded, so replays play it back.

Example::

    d = classify_unknown(ask, diagnosis, steps, checks)   # ask: Converger.ask
    d.failure_class, d.classified_by   # e.g. ("script_error", "model")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from antrieb.converge.diagnosis.rules import EGRESS_ADVICE, useful_lines
from antrieb.converge.results import CheckResult, Diagnosis, StepResult, tail
from antrieb.errors import LLMError, ReplayMismatch
from antrieb.llm import Message

PURPOSE = "classify"

ModelClass = Literal["missing_package", "missing_command", "config_syntax", "script_error",
                     "service_failed", "permission", "connectivity", "timeout",
                     "check_mismatch", "infrastructure", "egress_blocked"]

CLASSES = {
    "missing_package": "a package is missing or misnamed (apt, dpkg, a Python module)",
    "missing_command": "a command, unit, module or site the code invokes does not exist",
    "config_syntax": "a configuration file or input a tool parses is rejected",
    "script_error": "the code itself errs: undefined/unbound variable, exception, bad "
                    "argument, a step that is not repeatable",
    "permission": "an account or path was refused",
    "service_failed": "a service did not come up and the output does not say why",
    "connectivity": "something inside the cluster did not answer",
    "timeout": "a command hung",
    "check_mismatch": "everything ran but a check saw the wrong answer",
    "infrastructure": "the platform failed (package mirror or proxy error, a VM lost), "
                      "not the code",
    "egress_blocked": "the code reached for an address outside the cluster; "
                      + EGRESS_ADVICE,
}


class ModelClassification(BaseModel):
    """The model's answer: a class, the deciding line (quoted from the output) and why."""

    failure_class: ModelClass
    evidence: str = Field(max_length=400, description="the output line that decided it")
    reason: str = Field(min_length=3, max_length=600,
                        description="what that line tells, and why it means this class")


_SYSTEM = ("You classify failures of infrastructure code (shell or Ansible) run on fresh "
           "Debian 12 VMs. Pick exactly one class; quote the one output line that decides "
           "it; say in one sentence what that line tells. Answer with JSON only: "
           '{"failure_class": "...", "evidence": "...", "reason": "..."}.\nClasses:\n'
           + "\n".join(f"- {k}: {v}" for k, v in CLASSES.items()))


def messages(d: Diagnosis, steps: Sequence[StepResult],
             checks: Sequence[CheckResult]) -> list[Message]:
    """The one request: where it failed and its output (the tail, where errors are)."""
    out: list[str] = [f"Where: {d.summary}"]
    for s in steps:
        if not s.ok:
            out += [f"Failed step {s.artifact} on {s.node}, exit {s.exit_status}:",
                    tail(s.output(), 3000)]
            break
    else:
        for c in checks:
            if not c.passed:
                out += [f"Failed check {c.name!r} on {c.node}: {c.detail}",
                        tail(f"{c.stdout}\n{c.stderr}".strip(), 2000)]
                break
    return [Message(role="system", content=_SYSTEM),
            Message(role="user", content="Classify this failure.\n" + "\n".join(out))]


def classify_unknown(ask: Callable[[list[Message], Any, str], Any], d: Diagnosis,
                     steps: Sequence[StepResult], checks: Sequence[CheckResult]) -> Diagnosis:
    """``d`` reclassified by the model if it is ``unknown``; otherwise ``d`` unchanged."""
    if d.failure_class != "unknown" or d.kind == "none":
        return d
    try:
        answer: ModelClassification = ask(messages(d, steps, checks), ModelClassification,
                                          PURPOSE)
    except ReplayMismatch:
        raise  # a replay that does not fit is a bug in how it is replayed, not an answer
    except LLMError:  # no usable answer: stays unknown, goes back as a plain retry
        return d
    quoted = answer.evidence.strip()
    output = "\n".join(useful_lines("\n".join(
        [s.output() for s in steps] + [f"{c.stdout}\n{c.stderr}" for c in checks])))
    # a quote the output does not contain is not evidence: keep the rule's last line
    decided = quoted if quoted and quoted in output else d.decided_by
    return d.model_copy(update={
        "failure_class": answer.failure_class, "classified_by": "model",
        "decided_by": decided, "why": answer.reason.strip(),
        "summary": f"{d.summary}: {answer.failure_class.replace('_', ' ')} (model)",
        "advice": EGRESS_ADVICE if answer.failure_class == "egress_blocked" else ""})
