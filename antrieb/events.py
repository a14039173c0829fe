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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Literal

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
    """Base of every event: a kind tag and the wall-clock time it happened."""

    kind: str
    at: float = Field(default_factory=time.time)


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
    seconds: float = 0.0
    error: str = ""  # a one-line summary; never holds the API key


AnyEvent = Annotated[
    ImageBuildProgress | ImageBuilt | GoldenSnapshotReady | ClusterStateChanged
    | VMStateChanged | ClusterReady | CommandFinished | LLMExchange | LLMCallFinished,
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


def emit(event: Event) -> None:
    """Deliver ``event`` to every listener; a failing listener never breaks the producer."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception as exc:  # a consumer's bug must not stop a cluster coming up
            print(f"antrieb: event listener {listener!r} failed: {exc!r}", file=sys.stderr)
