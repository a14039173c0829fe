"""The view of one run, folded from the engine's event stream and nothing else.

Widgets and static reprs render a :class:`RunView`; :class:`RunState` builds it one event
at a time (live from :func:`antrieb.events.subscribe`, or from a recorded
``events.jsonl``). It decides nothing about the run: diagnoses, paths, timings and
artifacts are the ones the engine emitted. The only sums are of emitted figures (LLM
seconds of the calls made during an iteration, the teardown span between the
cluster's ``stopping`` and ``down`` events).

Example::

    state = RunState()
    for event in recorded_events:
        state.apply(event)
    state.view.status, [it.recovery for it in state.view.iterations]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from antrieb import events

# Which LLM answers carry the artifacts of the next iteration.
_ARTIFACT_PURPOSES = {"design", "retry", "troubleshoot"}


@dataclass
class StepView:
    node: str
    role: str
    artifact: str
    exit_status: int | None
    seconds: float
    install_s: float
    timed_out: bool
    changed: int | None
    output_tail: str
    rerun: bool

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


@dataclass
class CheckView:
    name: str
    node: str
    passed: bool
    detail: str
    output_tail: str
    seconds: float
    rerun: bool
    after_reboot: bool = False


@dataclass
class TurnView:
    turn: int
    node: str
    command: str
    why: str
    exit_status: int | None
    output_tail: str
    seconds: float


@dataclass
class IterationView:
    number: int
    phase: str
    roles: dict[str, str]  # node -> role
    started_at: float
    cluster_id: str | None = None
    cluster_state: str = "new"
    ips: dict[str, str] = field(default_factory=dict)
    node_state: dict[str, str] = field(default_factory=dict)
    boot_s: float | None = None
    node_boot_s: dict[str, float] = field(default_factory=dict)
    accel: str = ""
    steps: list[StepView] = field(default_factory=list)
    checks: list[CheckView] = field(default_factory=list)
    passed: bool | None = None  # None while running
    timings: dict[str, float] = field(default_factory=dict)
    diagnosis: dict[str, Any] | None = None
    recovery: dict[str, Any] | None = None
    turns: list[TurnView] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    artifacts_from: str = ""  # which answer (or the task) the artifacts came from
    explanation: str = ""  # the model's account of the correction made after this one
    llm_s: float = 0.0
    llm_calls: int = 0
    teardown_s: float | None = None
    finished_at: float | None = None
    proof: dict[str, Any] | None = None  # the proof's gates (ProofFinished), verify only


@dataclass
class RunView:
    run_id: str | None = None
    task_name: str = ""
    request: str = ""
    tool: str = ""
    provider: str = ""
    model: str = ""
    budgets: dict[str, float] = field(default_factory=dict)
    status: str = "waiting"  # waiting | running | converged | failed | stopped | ...
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    last_at: float | None = None
    seconds: float | None = None  # the engine's own total, once finished
    iterations: list[IterationView] = field(default_factory=list)
    design_llm_s: float = 0.0
    synthesized: dict[str, str] = field(default_factory=dict)
    synthesis_notes: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    unmeasured_calls: int = 0  # hand-written recordings: no usage was measured
    llm_failures: int = 0
    llm_s: float = 0.0
    playback: dict[str, Any] | None = None  # set by playback: where the record came from

    @property
    def current(self) -> IterationView | None:
        return self.iterations[-1] if self.iterations else None

    @property
    def max_iterations(self) -> int | None:
        value = self.budgets.get("max_iterations")
        return int(value) if value else None

    @property
    def tokens(self) -> int | None:
        """None when no call's usage was measured (a hand-written recording)."""
        if self.llm_calls and self.unmeasured_calls == self.llm_calls:
            return None
        return self.prompt_tokens + self.completion_tokens

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the start: the engine's total once finished; during playback
        the recorded time of the last event; live, the wall clock."""
        if self.started_at is None:
            return 0.0
        if self.seconds is not None:
            return self.seconds
        end = self.finished_at or (self.last_at if self.playback else None) or now \
            or time.time()
        return max(0.0, end - self.started_at)

    @property
    def verify(self) -> IterationView | None:
        verifies = [it for it in self.iterations if it.phase == "verify"]
        return verifies[-1] if verifies else None


def artifact_texts(answer: Any) -> dict[str, str]:
    """The artifact texts in a model's answer (shell: role -> script; Ansible: playbook
    and inventory), as the engine's models define them; {} if the answer has none."""
    if not isinstance(answer, dict) or not isinstance(answer.get("artifacts"), dict):
        return {}
    art = answer["artifacts"]
    if art.get("tool") == "ansible" or "playbook" in art:
        out = {"playbook": str(art.get("playbook", ""))}
        if art.get("inventory"):
            out["inventory"] = str(art["inventory"])
        return out
    scripts = art.get("scripts")
    return {str(k): str(v) for k, v in scripts.items()} if isinstance(scripts, dict) else {}


def _decode_answer(response: str) -> Any:
    from antrieb.llm.structured import extract_json

    try:
        return extract_json(response, purpose="render")
    except Exception:  # an answer the engine re-asked: it carries nothing to show
        return None


class RunState:
    """Folds events into a :class:`RunView`. Thread-safe; ``apply`` returns whether
    the view changed (events of other runs and clusters are ignored).

    ``task_artifacts`` are the artifacts the task itself gave (the user's code): the
    first iteration runs them when no design answer supplies any.
    """

    def __init__(self, run_id: str | None = None,
                 task_artifacts: dict[str, str] | None = None) -> None:
        self.view = RunView(run_id=run_id)
        self.lock = threading.RLock()
        self._task_artifacts = dict(task_artifacts or {})
        self._pending: tuple[dict[str, str], str, str] | None = None  # texts, from, why
        self._exchanges: dict[tuple[str, int], events.LLMExchange] = {}
        self._cluster_iteration: dict[str, IterationView] = {}
        self._stopping_at: dict[str, float] = {}
        self._after_finish = False  # LLM calls between an iteration's end and the next

    # -- routing ----------------------------------------------------------------------

    def apply(self, event: events.Event) -> bool:
        with self.lock:
            handler = getattr(self, "_on_" + event.kind, None)
            if handler is None or not self._mine(event):
                return False
            changed = handler(event)
            if changed is not False:
                self.view.last_at = event.at
            return changed is not False

    def _mine(self, event: events.Event) -> bool:
        v = self.view
        run_id = getattr(event, "run_id", None)
        if isinstance(event, events.RunStarted):
            return v.run_id is None or v.run_id == event.run_id
        if run_id is not None:
            return run_id == v.run_id
        if v.status != "running":  # LLM and cluster events belong to a run in progress
            return False
        cluster = getattr(event, "cluster", None)
        if cluster is not None and not isinstance(event, events.ClusterStateChanged):
            return cluster in self._cluster_iteration
        return True

    # -- run --------------------------------------------------------------------------

    def _on_run_started(self, e: events.RunStarted) -> None:
        v = self.view
        v.run_id, v.task_name, v.request, v.tool = e.run_id, e.task_name, e.request, e.tool
        v.provider, v.model, v.budgets = e.provider, e.model, dict(e.budgets)
        v.status, v.started_at = "running", e.at

    def _on_run_finished(self, e: events.RunFinished) -> None:
        v = self.view
        v.status, v.reason, v.finished_at, v.seconds = e.status, e.reason, e.at, e.seconds

    # -- iterations -------------------------------------------------------------------

    def _on_iteration_started(self, e: events.IterationStarted) -> None:
        it = IterationView(number=e.iteration, phase=e.phase, roles=dict(e.nodes),
                           started_at=e.at)
        if e.phase == "verify" and self.view.synthesized:
            it.artifacts, it.artifacts_from = dict(self.view.synthesized), "synthesis"
        elif self._pending is not None:
            it.artifacts, it.artifacts_from, _ = self._pending
        elif self._task_artifacts and not self.view.iterations:
            it.artifacts, it.artifacts_from = dict(self._task_artifacts), "the task"
        self._pending = None
        self._after_finish = False
        self.view.iterations.append(it)

    def _iteration(self, number: int) -> IterationView | None:
        for it in reversed(self.view.iterations):
            if it.number == number:
                return it
        return None

    def _on_step_finished(self, e: events.StepFinished) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        rerun = e.artifact.startswith("rerun:")
        it.steps.append(StepView(e.node, e.role, e.artifact.removeprefix("rerun:"),
                                 e.exit_status, e.seconds, e.install_s, e.timed_out,
                                 e.changed, e.output_tail, rerun))
        return True

    def _on_check_finished(self, e: events.CheckFinished) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        rerun, after_reboot = e.check.startswith("rerun:"), e.check.startswith("reboot:")
        name = e.check.removeprefix("rerun:").removeprefix("reboot:")
        it.checks.append(CheckView(name, e.node, e.passed, e.detail, e.output_tail, e.seconds,
                                   rerun, after_reboot))
        return True

    def _on_proof_finished(self, e: events.ProofFinished) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        it.proof = e.model_dump(mode="json")
        return True

    def _on_iteration_finished(self, e: events.IterationFinished) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        it.passed, it.timings, it.finished_at = e.passed, dict(e.timings), e.at
        self._after_finish = True
        return True

    def _on_failure_diagnosed(self, e: events.FailureDiagnosed) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        it.diagnosis = {"failure_class": e.failure_class, "node": e.node,
                        "summary": e.summary, "evidence": list(e.evidence)}
        return True

    def _on_recovery_chosen(self, e: events.RecoveryChosen) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        it.recovery = {"path": e.path, "reason": e.reason, "failure_class": e.failure_class,
                       "evidence": list(e.evidence), "classified_by": e.classified_by}
        return True

    def _on_troubleshoot_turn(self, e: events.TroubleshootTurn) -> bool:
        it = self._iteration(e.iteration)
        if it is None:
            return False
        it.turns.append(TurnView(e.turn, e.node, e.command, e.why, e.exit_status,
                                 e.output_tail, e.seconds))
        return True

    def _on_synthesized(self, e: events.Synthesized) -> None:
        self.view.synthesized, self.view.synthesis_notes = dict(e.artifacts), e.notes

    # -- the model --------------------------------------------------------------------

    def _on_llm_exchange(self, e: events.LLMExchange) -> bool:
        self._exchanges[(e.call_id, e.attempt)] = e
        return False

    def _on_llm_call_finished(self, e: events.LLMCallFinished) -> None:
        v = self.view
        v.prompt_tokens += e.prompt_tokens
        v.completion_tokens += e.completion_tokens
        v.llm_calls += 1
        v.unmeasured_calls += 0 if e.tokens_measured else 1
        v.llm_failures += 0 if e.ok else 1
        v.llm_s += e.seconds
        it = v.current
        if it is None:
            v.design_llm_s += e.seconds
        else:  # calls during an iteration or for its recovery / synthesis count to it
            it.llm_s += e.seconds
            it.llm_calls += 1
        exchange = self._exchanges.pop((e.call_id, e.attempt), None)
        if not e.ok or exchange is None or e.purpose not in _ARTIFACT_PURPOSES:
            return
        answer = _decode_answer(exchange.response)
        texts = artifact_texts(answer)
        if texts:
            why = str(answer.get("explanation", "")) if isinstance(answer, dict) else ""
            self._pending = (texts, f"the {e.purpose} answer", why)
            if it is not None and why:
                it.explanation = why

    # -- clusters ---------------------------------------------------------------------

    def _on_cluster_state(self, e: events.ClusterStateChanged) -> bool:
        it = self._cluster_iteration.get(e.cluster)
        if it is None:
            cur = self.view.current
            if e.state != events.ClusterState.STARTING or cur is None \
                    or cur.cluster_id is not None or cur.passed is not None:
                return False
            cur.cluster_id = e.cluster
            self._cluster_iteration[e.cluster] = it = cur
        it.cluster_state = str(e.state)
        if e.state == events.ClusterState.STOPPING:
            self._stopping_at[e.cluster] = e.at
        elif e.state == events.ClusterState.DOWN and e.cluster in self._stopping_at:
            it.teardown_s = e.at - self._stopping_at.pop(e.cluster)
        return True

    def _on_vm_state(self, e: events.VMStateChanged) -> bool:
        it = self._cluster_iteration[e.cluster]
        it.node_state[e.node] = str(e.state)
        if e.ip:
            it.ips[e.node] = e.ip
        return True

    def _on_cluster_ready(self, e: events.ClusterReady) -> bool:
        it = self._cluster_iteration[e.cluster]
        it.ips.update(e.nodes)
        it.boot_s, it.node_boot_s, it.accel = e.seconds, dict(e.node_seconds), e.accel
        return True
