"""The typed event stream: the one way state leaves the engine.

Producers (image builds, VMs, clusters, later the converger) call :func:`emit`;
consumers (CLI progress, widgets, the run store, the MCP server) subscribe.
A consumer that raises is reported once on stderr and never breaks the producer.

Example::

    from antrieb import events
    seen = []
    with events.subscribed(seen.append):
        ...  # bring a cluster up
    [e.kind for e in seen]
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, Field, TypeAdapter


class ClusterState(StrEnum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    DOWN = "down"
    FAILED = "failed"


class VMState(StrEnum):
    PENDING = "pending"
    RESTORING = "restoring"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class Event(BaseModel):
    """Base of every event: a kind tag, the wall-clock time it happened, and the run
    whose work emitted it (``scope``, stamped by :func:`emit` inside :func:`scoped`; None
    outside a run), so that two runs in one process tell their events apart."""

    kind: str
    at: float = Field(default_factory=time.time)
    scope: str | None = None


class ImageBuildProgress(Event):
    kind: Literal["image_build_progress"] = "image_build_progress"
    image: str
    step: str
    fraction: float | None = None
    detail: str = ""


class ImageBuilt(Event):
    kind: Literal["image_built"] = "image_built"
    image: str
    content_hash: str
    seconds: float
    cached: bool


class GoldenSnapshotReady(Event):
    kind: Literal["golden_snapshot_ready"] = "golden_snapshot_ready"
    image: str
    key: str
    seconds: float
    cached: bool


class CacheEvicted(Event):
    """An entry of the cache was deleted to keep it under its limit
    (:func:`antrieb.vm.cachedir.prune`)."""

    kind: Literal["cache_evicted"] = "cache_evicted"
    entry_kind: str  # image, golden, layer
    name: str
    bytes: int
    reason: str  # "outdated: ..." or "least recently used"


class ClusterStateChanged(Event):
    kind: Literal["cluster_state"] = "cluster_state"
    cluster: str
    state: ClusterState
    previous: ClusterState | None = None
    detail: str = ""


class VMStateChanged(Event):
    kind: Literal["vm_state"] = "vm_state"
    cluster: str
    node: str
    state: VMState
    ip: str | None = None
    detail: str = ""


class ClusterReady(Event):
    kind: Literal["cluster_ready"] = "cluster_ready"
    cluster: str
    driver: str
    accel: str
    nodes: dict[str, str]  # name -> IP
    seconds: float
    node_seconds: dict[str, float]


class CommandFinished(Event):
    kind: Literal["command_finished"] = "command_finished"
    cluster: str
    node: str
    command: str
    exit_status: int | None
    seconds: float
    truncated: bool
    timed_out: bool


class LLMExchange(Event):
    """One request to a model and its raw answer, so the run record keeps every prompt.

    ``messages`` are plain ``{"role", "content"}`` dicts: this module sits below
    ``antrieb.llm`` and must not import it.
    """

    kind: Literal["llm_exchange"] = "llm_exchange"
    call_id: str  # the attempts of one structured ask share it
    purpose: str
    provider: str
    model: str
    attempt: int
    messages: list[dict[str, str]]
    response: str


class LLMCallFinished(Event):
    """One attempt of a model call ended: cost, time, and whether its answer was usable."""

    kind: Literal["llm_call_finished"] = "llm_call_finished"
    call_id: str
    purpose: str
    provider: str
    model: str
    attempt: int
    ok: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_measured: bool = True  # False: a hand-written recording, the zeros mean nothing
    seconds: float = 0.0
    error: str = ""  # a one-line summary; never holds the API key


# -- convergence ------------------------------------------------------------------------
# Emitted by antrieb.converge. Texts (scripts, outputs) are already cut to a tail by the
# producer; the full artifacts live in the run record.


class RunStarted(Event):
    """A convergence run began: what it was asked, with which model and budgets."""

    kind: Literal["run_started"] = "run_started"
    run_id: str
    task_name: str
    request: str
    tool: str
    provider: str
    model: str
    budgets: dict[str, float] = Field(default_factory=dict)


class IterationStarted(Event):
    """A fresh cluster is about to be used for one attempt (or the final proof)."""

    kind: Literal["iteration_started"] = "iteration_started"
    run_id: str
    iteration: int
    phase: str  # "attempt" | "verify"
    nodes: dict[str, str] = Field(default_factory=dict)  # name -> role


class StepFinished(Event):
    """One artifact ran on one node (a role's script, or the playbook on the control node)."""

    kind: Literal["step_finished"] = "step_finished"
    run_id: str
    iteration: int
    node: str
    role: str
    artifact: str
    exit_status: int | None
    output_tail: str = ""
    seconds: float = 0.0
    install_s: float = 0.0
    timed_out: bool = False
    changed: int | None = None  # Ansible's changed count, when the step was a playbook


class CheckFinished(Event):
    kind: Literal["check_finished"] = "check_finished"
    run_id: str
    iteration: int
    check: str
    node: str
    passed: bool
    detail: str = ""
    output_tail: str = ""
    seconds: float = 0.0


class ProofFinished(Event):
    """The proof's gates on a verify iteration (see :class:`antrieb.converge.results.Proof`)."""

    kind: Literal["proof_finished"] = "proof_finished"
    run_id: str
    iteration: int
    passed: bool
    fresh_server: bool
    idempotent: bool | None
    reboot: str  # passed | failed | not_run
    reboot_s: dict[str, float] = Field(default_factory=dict)
    residue: list[dict[str, str]] = Field(default_factory=list)  # node, kind, item, detail
    strict: bool = False


class FailureDiagnosed(Event):
    kind: Literal["failure_diagnosed"] = "failure_diagnosed"
    run_id: str
    iteration: int
    failure_class: str
    node: str | None = None
    summary: str = ""
    evidence: list[str] = Field(default_factory=list)


class RecoveryChosen(Event):
    kind: Literal["recovery_chosen"] = "recovery_chosen"
    run_id: str
    iteration: int
    path: Literal["retry", "troubleshoot", "rerun"]
    reason: str
    failure_class: str
    evidence: list[str] = Field(default_factory=list)
    classified_by: Literal["rules", "model"] = "rules"


class TroubleshootTurn(Event):
    """One command the model asked for on the live failed cluster, and what it returned."""

    kind: Literal["troubleshoot_turn"] = "troubleshoot_turn"
    run_id: str
    iteration: int
    turn: int
    node: str
    command: str
    why: str = ""
    exit_status: int | None = None
    output_tail: str = ""
    seconds: float = 0.0


class Synthesized(Event):
    kind: Literal["synthesized"] = "synthesized"
    run_id: str
    tool: str
    artifacts: dict[str, str] = Field(default_factory=dict)  # role (or "playbook") -> text
    notes: str = ""


class LayerChosen(Event):
    """What a role's nodes start from in an iteration: a package layer (found in the cache,
    or built now from the pristine golden) or the pristine golden, and why."""

    kind: Literal["layer_chosen"] = "layer_chosen"
    run_id: str
    iteration: int
    role: str
    nodes: list[str] = Field(default_factory=list)
    base: str  # the pristine image
    image: str  # what the nodes start from: ``base`` or a layer's name
    packages: list[str] = Field(default_factory=list)
    outcome: Literal["hit", "built", "pristine"]
    reason: str = ""
    build_s: float = 0.0


class IterationFinished(Event):
    kind: Literal["iteration_finished"] = "iteration_finished"
    run_id: str
    iteration: int
    phase: str
    passed: bool
    timings: dict[str, float] = Field(default_factory=dict)


class RunFinished(Event):
    kind: Literal["run_finished"] = "run_finished"
    run_id: str
    status: Literal["converged", "failed", "stopped", "budget_exhausted"]
    reason: str
    iterations: int = 0
    seconds: float = 0.0


AnyEvent = Annotated[
    ImageBuildProgress | ImageBuilt | GoldenSnapshotReady | CacheEvicted | ClusterStateChanged
    | VMStateChanged | ClusterReady | CommandFinished | LLMExchange | LLMCallFinished
    | RunStarted | IterationStarted | StepFinished | CheckFinished | ProofFinished
    | FailureDiagnosed
    | RecoveryChosen | TroubleshootTurn | Synthesized | LayerChosen | IterationFinished
    | RunFinished,
    Field(discriminator="kind"),
]
event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

Listener = Callable[[Event], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` with every event from now on; returns the unsubscribe function."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock, contextlib.suppress(ValueError):
            _listeners.remove(listener)

    return unsubscribe


@contextlib.contextmanager
def subscribed(listener: Listener) -> Iterator[None]:
    """Subscribe for the duration of a ``with`` block."""
    unsubscribe = subscribe(listener)
    try:
        yield
    finally:
        unsubscribe()


_scope: contextvars.ContextVar[str | None] = contextvars.ContextVar("antrieb_event_scope",
                                                                   default=None)


@contextlib.contextmanager
def scoped(name: str) -> Iterator[None]:
    """Events emitted in this block (and in workers started with :func:`carry`) carry
    ``scope=name``."""
    token = _scope.set(name)
    try:
        yield
    finally:
        _scope.reset(token)


P = ParamSpec("P")
R = TypeVar("R")


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` for a worker thread: it emits in the scope of the thread that wrapped it
    (threads do not inherit context variables)."""
    scope = _scope.get()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _scope.set(scope)
        try:
            return fn(*args, **kwargs)
        finally:
            _scope.reset(token)

    return run


def emit(event: Event) -> None:
    """Deliver ``event`` to every listener; a failing listener never breaks the producer."""
    if event.scope is None:
        event.scope = _scope.get()
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception as exc:  # a consumer's bug must not stop a cluster coming up
            print(f"antrieb: event listener {listener!r} failed: {exc!r}", file=sys.stderr)
