"""What a run produces: step and check results, diagnoses, decisions, and the run result.

Example::

    result = Converger(task, provider=llm).run()
    result.status, result.reason, result.final.texts() if result.final else None
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from antrieb.converge.models import Artifacts

Status = Literal["converged", "failed", "stopped", "budget_exhausted"]
FailureClass = Literal["missing_package", "missing_command", "config_syntax", "script_error",
                       "service_failed", "permission", "connectivity", "timeout",
                       "check_mismatch", "infrastructure", "egress_blocked", "not_persistent",
                       "residue", "unknown"]
# rerun: the same code again on a fresh cluster, the model is not asked (infrastructure)
Path = Literal["retry", "troubleshoot", "rerun"]
ClassifiedBy = Literal["rules", "model"]
TAIL = 3000


def tail(text: str, limit: int = TAIL) -> str:
    """The end of ``text``: errors are at the end of logs."""
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


class StepResult(BaseModel):
    """One artifact run on one node."""

    node: str
    role: str
    artifact: str  # "script:<role>" or "playbook"
    exit_status: int | None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    install_s: float = 0.0  # time spent in apt-get/apt inside this step
    changed: int | None = None  # Ansible: sum of changed=N of the recap

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def output(self) -> str:
        return (self.stdout + ("\n" + self.stderr if self.stderr else "")).strip()


class CheckResult(BaseModel):
    name: str
    node: str
    passed: bool
    detail: str = ""  # why it failed, in one line
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    assertion: str | None = None  # the host assertion's kind, for testinfra checks


class Diagnosis(BaseModel):
    failure_class: FailureClass
    node: str | None = None
    step: str | None = None  # the step or check where it showed
    summary: str = ""
    evidence: list[str] = Field(default_factory=list)
    kind: Literal["step", "check", "none"] = "step"
    decided_by: str = ""  # the evidence line that decided the class
    why: str = ""  # what that line tells (from the rule, or the model)
    classified_by: ClassifiedBy = "rules"
    advice: str = ""  # told to the model with the failure (e.g. what is reachable)


class Recovery(BaseModel):
    path: Path
    reason: str
    failure_class: FailureClass
    classified_by: ClassifiedBy = "rules"


class TroubleshootExchange(BaseModel):
    turn: int
    node: str
    command: str
    why: str = ""
    exit_status: int | None = None
    output: str = ""
    seconds: float = 0.0


class Residue(BaseModel):
    """Something the scripts left on a node that the result does not need."""

    node: str
    kind: Literal["file", "private_key", "package"]
    item: str  # a path, or a package name
    detail: str = ""


class Proof(BaseModel):
    """Which of the proof's gates ran on the verify iteration, and how each ended.

    - ``fresh_server``: the proof's cluster was in a freshly installed server's state
      (empty apt lists, each node its own machine-id and SSH host key);
    - ``idempotent``: the artifacts applied a second time changed nothing and every check
      passed again (None: the first pass already failed);
    - ``reboot``: every node rebooted for real and every check passed again
      (``passed``/``failed``, or ``not_run`` when an earlier gate failed), with each
      node's seconds from the reboot command to sshd answering in ``reboot_s``;
    - ``residue``: what the scripts left behind (scratch files, private keys readable by
      others, packages no script names); a finding, or a failure when ``strict``.
    """

    fresh_server: bool = False
    idempotent: bool | None = None
    reboot: Literal["passed", "failed", "not_run"] = "not_run"
    reboot_s: dict[str, float] = Field(default_factory=dict)
    residue: list[Residue] = Field(default_factory=list)
    strict: bool = False

    def gates(self) -> dict[str, Any]:
        """The gates as plain values, for JSON surfaces (bench, MCP, store)."""
        return {"fresh_server": self.fresh_server, "idempotent": self.idempotent,
                "reboot": self.reboot,
                "reboot_s": {k: round(v, 1) for k, v in self.reboot_s.items()},
                "residue": [r.model_dump() for r in self.residue], "strict": self.strict}


class Iteration(BaseModel):
    """One fresh cluster: an attempt, or the final proof of the synthesized artifacts."""

    number: int
    phase: Literal["attempt", "verify"] = "attempt"
    artifacts: Artifacts
    steps: list[StepResult] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    rerun_steps: list[StepResult] = Field(default_factory=list)  # idempotence pass
    rerun_checks: list[CheckResult] = Field(default_factory=list)
    reboot_checks: list[CheckResult] = Field(default_factory=list)  # after the reboot gate
    proof: Proof | None = None  # the verify iteration's gates
    passed: bool = False
    diagnosis: Diagnosis | None = None
    recovery: Recovery | None = None
    troubleshoot: list[TroubleshootExchange] = Field(default_factory=list)
    explanation: str = ""  # the model's account of its correction
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def install_s(self) -> float:
        return self.timings.get("install_s", 0.0)


class Cost(BaseModel):
    prompt_tokens: int | None = 0  # None: no call's usage was measured
    completion_tokens: int | None = 0
    llm_calls: int = 0
    unmeasured_calls: int = 0  # calls whose usage nobody measured (hand-written recordings)
    vm_seconds: float = 0.0  # sum over clusters of nodes x seconds up

    @property
    def tokens(self) -> int | None:
        """Tokens of the measured calls; None ("not measured") when no call was."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens

    def add_call(self, prompt: int, completion: int, measured: bool = True) -> None:
        self.llm_calls += 1
        if not measured:
            self.unmeasured_calls += 1
            if self.unmeasured_calls == self.llm_calls:  # none measured so far
                self.prompt_tokens = self.completion_tokens = None
            return
        self.prompt_tokens = (self.prompt_tokens or 0) + prompt
        self.completion_tokens = (self.completion_tokens or 0) + completion


class RunResult(BaseModel):
    run_id: str
    task_name: str
    status: Status
    reason: str
    iterations: list[Iteration] = Field(default_factory=list)
    final: Artifacts | None = None  # the synthesized, proven artifacts
    proof: Proof | None = None  # the gates of the last proof (verify iteration) run
    design_notes: str = ""
    synthesis_notes: str = ""
    findings: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    cost: Cost = Field(default_factory=Cost)
    record_dir: str | None = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    def attempts(self) -> list[Iteration]:
        return [it for it in self.iterations if it.phase == "attempt"]

    def paths(self) -> list[str]:
        """The recovery path of each failed iteration, in order."""
        return [it.recovery.path for it in self.iterations if it.recovery is not None]

    def figures(self) -> dict[str, Any]:
        """The benchmark figures of this run (see ``antrieb bench converge``)."""
        t = self.timings
        in_vm = t.get("in_vm_s", 0.0)
        llm = t.get("llm_s", 0.0)
        total = t.get("total_s", 0.0)
        return {
            "run_id": self.run_id,
            "example": self.task_name,
            "status": self.status,
            "reason": self.reason,
            "converged": self.converged,
            # fresh clusters, the proof included: what the store, MCP and RunFinished count
            "iterations": len(self.iterations),
            "attempts": len(self.attempts()),
            "paths": self.paths(),
            "reasons": [it.recovery.reason for it in self.iterations if it.recovery],
            "total_s": round(total, 2),
            "in_vm_s": round(in_vm, 2),
            "llm_s": round(llm, 3),
            "overhead_ratio": round(total / (in_vm + llm), 3) if in_vm + llm > 0 else None,
            "cluster_up_s": round(t.get("cluster_up_s", 0.0), 2),
            "teardown_s": round(t.get("teardown_s", 0.0), 2),
            "per_iteration": [
                {"number": it.number, "phase": it.phase, "passed": it.passed,
                 "path": it.recovery.path if it.recovery else None,
                 "failure_class": it.diagnosis.failure_class if it.diagnosis else None,
                 **{k: round(v, 3) for k, v in it.timings.items()}}
                for it in self.iterations],
            "proof": self.proof.gates() if self.proof else None,
            "tokens": self.cost.tokens,
            "llm_calls": self.cost.llm_calls,
            "vm_seconds": round(self.cost.vm_seconds, 1),
        }
