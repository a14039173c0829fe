"""Recorded conversations: play one back offline, or record a live one as it happens.

A recording is a header plus the exchanges of a run, in order. Two spellings:

- JSON Lines (what :class:`RecordingProvider` writes): the first line is the header,
  every further line one exchange, appended and flushed as it happens, so a run that
  crashes still leaves every exchange up to the crash.
- One JSON or YAML document ``{format, version, model, created, exchanges: [...]}``:
  handy for hand-written recordings (the curated examples), where YAML block
  scalars keep scripts readable.

An exchange is ``{purpose, request, response, usage, model, seconds}``. A hand-written
one may give ``expect: [substrings]`` instead of ``request``: the last user message
must contain each of them.

Matching is strict and in order: the next request must have the exchange's
``purpose``, and then either contain every ``expect`` substring, or equal the recorded
request on its stable parts: every message up to and including the first user
message (system prompt and task) exactly, and the rest only by role, since later
messages carry live VM output that differs between runs. Anything else raises
:class:`ReplayMismatch`: a replay never answers a question it was not asked.

Example::

    from antrieb.llm import Message, OpenAIProvider, RecordingProvider, ReplayProvider

    live = RecordingProvider(OpenAIProvider(), Path("run.jsonl"))
    live.complete([Message(role="user", content="hi")], purpose="design")
    again = ReplayProvider(Path("run.jsonl"))
    again.complete([Message(role="user", content="hi")], purpose="design").text
"""

from __future__ import annotations

import difflib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from antrieb.errors import LLMError, LLMUnavailable, RecordingFormatError, ReplayMismatch
from antrieb.llm.base import Completion, Message, Provider, Usage

FORMAT = "antrieb-llm-recording"
VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RecordedExchange(BaseModel):
    """One request and its answer (or the error the provider raised instead)."""

    purpose: str
    request: list[Message] | None = None  # machine-recorded: the full conversation
    expect: list[str] | None = None  # hand-written: substrings of the last user message
    response: str = ""
    usage: Usage | None = None  # None: not measured (hand-written recordings)
    model: str | None = None
    seconds: float | None = None  # None: not measured
    # A failed call is recorded too, so a replay reaches the same outcome as the run.
    error: str | None = None
    error_kind: Literal["unavailable", "error"] | None = None


class RecordingHeader(BaseModel):
    format: Literal["antrieb-llm-recording"] = FORMAT
    version: Literal[1] = VERSION
    model: str = ""
    provider: str = ""
    created: str = Field(default_factory=_now)


class Recording(RecordingHeader):
    """A whole recording in memory.

    Example::

        rec = Recording.load(Path("examples/nginx-lb.yaml"))
        [x.purpose for x in rec.exchanges]
    """

    exchanges: list[RecordedExchange] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Recording:
        """Read any of the spellings; a torn last JSONL line (a crash mid-write) is dropped."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecordingFormatError(path, "file", str(exc)) from exc
        if path.suffix in (".yaml", ".yml"):
            try:
                return cls._from_document(path, yaml.safe_load(text))
            except yaml.YAMLError as exc:
                raise RecordingFormatError(path, "YAML", str(exc)) from exc
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, dict) and "exchanges" in whole:
            return cls._from_document(path, whole)
        return cls._from_lines(path, text)

    @classmethod
    def _from_document(cls, path: Path, data: Any) -> Recording:
        if not isinstance(data, dict):
            raise RecordingFormatError(path, "top level", "expected a mapping with 'exchanges'")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RecordingFormatError(path, "content", _short_errors(exc)) from exc

    @classmethod
    def _from_lines(cls, path: Path, text: str) -> Recording:
        # "\n" only: splitlines() also breaks at U+0085/U+2028/U+2029 inside JSON strings
        lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
        if not lines:
            raise RecordingFormatError(path, "line 1", "empty file, no header")
        rows: list[tuple[int, Any]] = []
        for pos, (n, line) in enumerate(lines):
            try:
                rows.append((n, json.loads(line)))
            except ValueError as exc:
                if pos == len(lines) - 1 and pos > 0:
                    break  # the write that a crash interrupted: everything before it stands
                raise RecordingFormatError(path, f"line {n}", f"not JSON: {exc}") from exc
        try:
            header = RecordingHeader.model_validate(rows[0][1])
        except ValidationError as exc:
            raise RecordingFormatError(path, "line 1 (header)", _short_errors(exc)) from exc
        exchanges = []
        for n, row in rows[1:]:
            try:
                exchanges.append(RecordedExchange.model_validate(row))
            except ValidationError as exc:
                raise RecordingFormatError(path, f"line {n}", _short_errors(exc)) from exc
        return cls(**header.model_dump(), exchanges=exchanges)

    def save(self, path: Path) -> None:
        """Write as JSON Lines (``.jsonl``), YAML (``.yaml``/``.yml``) or one JSON document."""
        if path.suffix == ".jsonl":
            head = RecordingHeader(**self.model_dump(exclude={"exchanges"}))
            lines = [head.model_dump_json()]
            lines += [x.model_dump_json(exclude_none=True) for x in self.exchanges]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif path.suffix in (".yaml", ".yml"):
            data = self.model_dump(mode="json", exclude_none=True)
            path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
        else:
            path.write_text(self.model_dump_json(indent=2, exclude_none=True), encoding="utf-8")


def _short_errors(exc: ValidationError, limit: int = 5) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
             for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _clip(text: str, limit: int = 300) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _diff(expected: str, got: str, limit: int = 20) -> str:
    lines = list(difflib.unified_diff(expected.splitlines(), got.splitlines(),
                                      "recorded", "requested", lineterm="", n=1))
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def _stable_count(messages: list[Message]) -> int:
    """How many leading messages must match exactly: up to and including the first user one."""
    for i, message in enumerate(messages):
        if message.role == "user":
            return i + 1
    return len(messages)


def mismatch(exchange: RecordedExchange, messages: list[Message], purpose: str) -> str | None:
    """Why ``messages`` do not match ``exchange``, or ``None`` when they do."""
    if purpose != exchange.purpose:
        return f"the recording expects purpose {exchange.purpose!r}, the request has {purpose!r}"
    if exchange.expect is not None:
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        missing = [s for s in exchange.expect if s not in last_user]
        if missing:
            return (f"purpose {purpose!r}: the last user message lacks {missing!r}; "
                    f"it reads: {_clip(last_user)}")
        return None
    if exchange.request is None:
        return None  # hand-written with neither: the purpose alone identifies it
    recorded = exchange.request
    roles_rec, roles_got = [m.role for m in recorded], [m.role for m in messages]
    if roles_rec != roles_got:
        return f"purpose {purpose!r}: recorded roles {roles_rec}, requested roles {roles_got}"
    for i in range(_stable_count(recorded)):
        if recorded[i].content != messages[i].content:
            return (f"purpose {purpose!r}: message {i} ({recorded[i].role}) differs:\n"
                    + _diff(recorded[i].content, messages[i].content))
    return None


class ReplayProvider:
    """Answers from a recording, in order, or raises :class:`ReplayMismatch`.

    Example::

        llm = ReplayProvider(Path("examples/nginx-lb.yaml"))
        llm.complete(messages, purpose="design").text
        llm.remaining  # exchanges not yet played
    """

    name = "replay"

    def __init__(self, recording: Path | str | Recording) -> None:
        if not isinstance(recording, Recording):
            self.source = str(recording)
            recording = Recording.load(Path(recording))
        else:
            self.source = "<in memory>"
        self.recording = recording
        self.model = recording.model or "replay"
        self._next = 0
        self._lock = threading.Lock()  # troubleshoot and widgets may share one provider

    def __repr__(self) -> str:
        return f"ReplayProvider({self.source!r}, played={self._next}/{self.total})"

    @property
    def total(self) -> int:
        return len(self.recording.exchanges)

    @property
    def remaining(self) -> int:
        return self.total - self._next

    def complete(self, messages: list[Message], *, purpose: str) -> Completion:
        """The recorded answer to this request; a failed recorded call fails again."""
        with self._lock:
            index = self._next
            if index >= self.total:
                last = messages[-1].content if messages else ""
                raise ReplayMismatch(index, f"the recording has only {self.total} exchanges; "
                                     f"one more was requested (purpose {purpose!r}): "
                                     f"{_clip(last)}")
            exchange = self.recording.exchanges[index]
            why = mismatch(exchange, messages, purpose)
            if why is not None:
                raise ReplayMismatch(index, why)
            self._next += 1
        if exchange.error_kind == "unavailable":
            raise LLMUnavailable(f"(recorded) {exchange.error}", provider=self.name)
        if exchange.error_kind == "error":
            raise LLMError(f"(recorded) {exchange.error}", provider=self.name)
        return Completion(text=exchange.response, model=exchange.model or self.model,
                          usage=exchange.usage or Usage(measured=False), seconds=0.0,
                          recorded_seconds=exchange.seconds)


class RecordingProvider:
    """Passes every call to ``inner`` and appends the exchange to a JSONL recording.

    Each exchange is written and flushed to disk before the answer is returned, so a
    crashed run leaves a readable partial recording. Errors of the inner provider
    are recorded and re-raised. ``append=True`` continues an existing recording.

    Example::

        llm = RecordingProvider(OpenAIProvider(), Path("runs/42/llm.jsonl"))
        llm.complete(messages, purpose="design")
    """

    def __init__(self, inner: Provider, path: Path, *, append: bool = False) -> None:
        self.inner, self.path = inner, Path(path)
        self.name, self.model = inner.name, inner.model
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not (append and self.path.exists() and self.path.stat().st_size > 0):
            header = RecordingHeader(model=inner.model, provider=inner.name)
            self._write(header.model_dump_json(), mode="w")

    def __repr__(self) -> str:
        return f"RecordingProvider({self.inner!r}, {str(self.path)!r})"

    def _write(self, line: str, mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the point of recording as we go is surviving a crash

    def complete(self, messages: list[Message], *, purpose: str) -> Completion:
        """Call ``inner``; record the request with its answer or its error."""
        request = [Message(role=m.role, content=m.content) for m in messages]
        started = time.monotonic()
        try:
            done = self.inner.complete(messages, purpose=purpose)
        except ReplayMismatch:
            raise  # not an outcome of the run, a bug in how it is replayed
        except LLMError as exc:
            kind: Literal["unavailable", "error"] = (
                "unavailable" if isinstance(exc, LLMUnavailable) else "error")
            failed = RecordedExchange(purpose=purpose, request=request, error=str(exc),
                                      error_kind=kind, model=self.inner.model,
                                      seconds=round(time.monotonic() - started, 3))
            with self._lock:
                self._write(failed.model_dump_json(exclude_none=True))
            raise
        seconds = done.recorded_seconds if done.recorded_seconds is not None else done.seconds
        exchange = RecordedExchange(purpose=purpose, request=request, response=done.text,
                                    usage=done.usage, model=done.model,
                                    seconds=round(seconds, 3))
        with self._lock:
            self._write(exchange.model_dump_json(exclude_none=True))
        return done
