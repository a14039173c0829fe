"""Asking a model for data: extract the JSON, validate it, re-ask with the error.

Models wrap JSON in fences, add prose, drop fields, answer with a list where an
object was asked, or ramble for megabytes. None of that may crash a run: each bad
answer goes back to the model with a short description of what was wrong, a bounded
number of times, and then :class:`LLMOutputError` ends the attempt with a clear
reason. Every attempt emits :class:`~antrieb.events.LLMExchange` (prompt and answer,
for the run record) and :class:`~antrieb.events.LLMCallFinished` (cost and outcome).

Example::

    from pydantic import BaseModel
    from antrieb.llm import Message, ask, get_provider

    class Plan(BaseModel):
        nodes: list[str]

    plan = ask(get_provider(None), [Message(role="user", content="Plan 2 nodes as JSON")],
               Plan, purpose="design")
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from antrieb import events
from antrieb.errors import LLMError, LLMOutputError
from antrieb.llm.base import Completion, Message, Provider

T = TypeVar("T")

MAX_CHARS = 200_000
# What goes back to the model of its own bad answer: enough to see the mistake, not
# another 200 kB of tokens on every re-ask.
_ECHO_CHARS = 4_000
_TAIL_CHARS = 1_000
# Bounds the scan for a JSON start in prose: a text of 100k "{" must not cost 100k decodes.
_MAX_STARTS = 64
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)


class _BadAnswer(Exception):
    """An answer that cannot be used; the message goes back to the model."""


def _tail(text: str) -> str:
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


def _check_size(text: str, max_chars: int) -> None:
    if not text.strip():
        raise _BadAnswer("the answer was empty")
    if len(text) > max_chars:
        raise _BadAnswer(f"the answer was {len(text)} characters long, the limit is {max_chars}")


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):  # deep nesting ends in RecursionError, not ValueError
        return False, None


def _scan(text: str) -> Any:
    """The longest JSON object or array embedded in prose, or raise."""
    decoder = json.JSONDecoder()
    best: tuple[int, Any] | None = None
    pos, tries = 0, 0
    while tries < _MAX_STARTS:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        tries += 1
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        if best is None or end - start > best[0]:
            best = (end - start, value)
        pos = end  # skip what was decoded: its inner braces are not separate answers
    if best is None:
        raise _BadAnswer("no JSON object was found in the answer")
    return best[1]


def _extract(text: str, max_chars: int) -> Any:
    _check_size(text, max_chars)
    ok, value = _loads(text.strip())
    if ok:
        return value
    parsed = [(len(body), value) for _lang, body in _FENCE.findall(text)
              for ok, value in [_loads(body)] if ok]
    if parsed:
        return max(parsed, key=lambda pair: pair[0])[1]
    return _scan(text)


def extract_json(text: str, *, max_chars: int = MAX_CHARS, purpose: str = "parse") -> Any:
    """The JSON value in a model's answer: bare, in a ```json fence, or amid prose.

    Raises :class:`LLMOutputError` (and nothing else) for empty, oversized or
    JSON-free text. Of several candidates the longest wins: the answer is usually
    the big object, not an example in the prose around it.

    Example::

        extract_json('Here you go:\\n```json\\n{"nodes": 2}\\n```')  # {'nodes': 2}
    """
    try:
        return _extract(text, max_chars)
    except _BadAnswer as exc:
        raise LLMOutputError(purpose, 1, str(exc), _tail(text)) from None


def _validation_summary(exc: ValidationError, limit: int = 6) -> str:
    """Pydantic's errors in a few lines a model can act on."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def _parser(schema: Any, max_chars: int) -> Callable[[str], Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(schema)

    def parse(text: str) -> Any:
        value = _extract(text, max_chars)
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise _BadAnswer(f"the JSON does not match the schema: {_validation_summary(exc)}"
                             ) from None

    return parse


def _run(provider: Provider, messages: Sequence[Message], parse: Callable[[str], Any], *,
         purpose: str, max_attempts: int, hint: str) -> Any:
    """The ask loop shared by :func:`ask` and :func:`ask_text`."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    conversation = list(messages)
    call_id = uuid.uuid4().hex[:12]
    name, model = provider.name, provider.model
    error, text = "", ""
    for attempt in range(1, max_attempts + 1):
        started = time.monotonic()
        try:
            done: Completion = provider.complete(list(conversation), purpose=purpose)
        except LLMError as exc:
            events.emit(events.LLMCallFinished(
                call_id=call_id, purpose=purpose, provider=name, model=model, attempt=attempt,
                ok=False, seconds=time.monotonic() - started,
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
            raise
        text = done.text
        events.emit(events.LLMExchange(
            call_id=call_id, purpose=purpose, provider=name, model=done.model, attempt=attempt,
            messages=[{"role": m.role, "content": m.content} for m in conversation],
            response=text))
        try:
            result = parse(text)
        except _BadAnswer as exc:
            error = str(exc)
        else:
            error = ""
        if error and done.finish_reason == "length":
            error += " (the answer was cut off at the token limit: answer more briefly)"
        events.emit(events.LLMCallFinished(
            call_id=call_id, purpose=purpose, provider=name, model=done.model, attempt=attempt,
            ok=not error, prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
            tokens_measured=done.usage.measured, seconds=done.seconds,
            error=error[:300]))
        if not error:
            return result
        echoed = text if len(text) <= _ECHO_CHARS else (
            text[:_ECHO_CHARS] + f"\n[... {len(text) - _ECHO_CHARS} more characters cut]")
        conversation += [
            Message(role="assistant", content=echoed),
            Message(role="user", content=f"Your answer could not be used: {error}. {hint}"),
        ]
    raise LLMOutputError(purpose, max_attempts, error, _tail(text))


def ask(provider: Provider, messages: Sequence[Message], schema: type[T], *, purpose: str,
        max_attempts: int = 3, max_chars: int = MAX_CHARS) -> T:
    """Ask until the answer parses into ``schema`` (any pydantic model or type).

    Raises :class:`LLMOutputError` after ``max_attempts`` unusable answers, and lets
    the provider's :class:`LLMUnavailable` / :class:`LLMError` through unchanged.

    Example::

        class Topology(BaseModel):
            nodes: list[str] = Field(max_length=4)

        topo = ask(llm, [Message(role="user", content=prompt)], Topology, purpose="design")
    """
    hint = "Reply with exactly one JSON value that matches the requested schema, without prose."
    return _run(provider, messages, _parser(schema, max_chars), purpose=purpose,
                max_attempts=max_attempts, hint=hint)


def ask_text(provider: Provider, messages: Sequence[Message], *, purpose: str,
             max_attempts: int = 3, max_chars: int = MAX_CHARS) -> str:
    """Ask for a free-form answer; only empty or oversized answers are re-asked.

    Example::

        reason = ask_text(llm, [Message(role="user", content=log)], purpose="diagnose")
    """

    def parse(text: str) -> str:
        _check_size(text, max_chars)
        return text.strip()

    return _run(provider, messages, parse, purpose=purpose, max_attempts=max_attempts,
                hint="Please answer again.")
