"""LLM providers behind one Protocol, and structured asking on top of them.

- :class:`OpenAIProvider`: any OpenAI-compatible chat-completions server.
- :class:`ReplayProvider` / :class:`RecordingProvider`: play back or record a run.
- :func:`ask` / :func:`ask_text`: parse, validate and re-ask, emitting events.

``get_provider`` picks one from a spec string, by default ``$ANTRIEB_LLM``:
``"replay:PATH"`` replays a recording, ``"openai"`` (or nothing) uses the
OpenAI-compatible client configured from the environment.

Example::

    from antrieb.llm import Message, ask_text, get_provider

    llm = get_provider("replay:tests/data/hello.jsonl")
    ask_text(llm, [Message(role="user", content="hello")], purpose="smoke")
"""

from __future__ import annotations

import os
from pathlib import Path

from antrieb.errors import ConfigError
from antrieb.llm.base import Completion, Message, Provider, Usage
from antrieb.llm.openai_provider import OpenAIProvider
from antrieb.llm.replay import (
    RecordedExchange,
    Recording,
    RecordingProvider,
    ReplayProvider,
)
from antrieb.llm.structured import ask, ask_text, extract_json

__all__ = [
    "Completion",
    "Message",
    "OpenAIProvider",
    "Provider",
    "RecordedExchange",
    "Recording",
    "RecordingProvider",
    "ReplayProvider",
    "Usage",
    "ask",
    "ask_text",
    "extract_json",
    "get_provider",
]


def get_provider(spec: str | None = None) -> Provider:
    """The provider a spec names; ``None`` means ``$ANTRIEB_LLM``, then ``"openai"``.

    Example::

        get_provider("replay:examples/nginx-lb.yaml")  # ReplayProvider
        get_provider("openai")                          # OpenAIProvider from OPENAI_* env
    """
    spec = spec or os.environ.get("ANTRIEB_LLM") or "openai"
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "replay":
        if not arg:
            raise ConfigError("the 'replay' LLM spec needs a path: replay:PATH")
        return ReplayProvider(Path(arg).expanduser())
    if kind == "openai":
        # "openai:MODEL" is a shorthand for picking the model; the rest comes from env.
        return OpenAIProvider(model=arg or None)
    raise ConfigError(f"unknown LLM spec {spec!r}: use 'openai', 'openai:MODEL' or 'replay:PATH'")
