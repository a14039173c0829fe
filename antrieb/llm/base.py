"""What every LLM provider speaks: chat messages in, one completion out.

A provider is anything with ``name``, ``model`` and ``complete(messages, purpose=...)``;
the OpenAI-compatible client and the replay player are the two shipped here. The engine
never calls ``complete`` directly: it goes through :mod:`antrieb.llm.structured`, which
parses, re-asks and emits the events.

Example::

    from antrieb.llm import Message, get_provider

    provider = get_provider("replay:examples/nginx-lb.yaml")
    done = provider.complete([Message(role="user", content="hi")], purpose="design")
    print(done.text, done.usage.total)
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message.

    Example::

        Message(role="system", content="You write shell scripts for Debian 12.")
    """

    role: Role
    content: str


class Usage(BaseModel):
    """Tokens one call cost, as the server reported them (0 when it reported nothing).

    Example::

        Usage(prompt_tokens=812, completion_tokens=95).total  # 907
    """

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    # False: nobody measured this call (a hand-written recording): the zeros mean nothing
    measured: bool = True

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    """One answer from a provider.

    ``seconds`` is the wall time this call took here. A replayed answer took no time,
    so it reports ``seconds=0`` and keeps the original call's time in
    ``recorded_seconds``: budgets count what really happened, reports can still show
    what the recorded run cost.

    Example::

        Completion(text="{}", model="gpt-4o-mini", usage=Usage(), seconds=1.2)
    """

    text: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    finish_reason: str | None = None  # "length" means the answer was cut off
    recorded_seconds: float | None = None


@runtime_checkable
class Provider(Protocol):
    """Anything that turns a conversation into one answer.

    ``purpose`` is a short tag of why the call is made ("design", "retry",
    "troubleshoot", "synthesize", "diagnose", ...): the replay provider matches on
    it, events and the run record carry it.

    Example::

        class Echo:
            name, model = "echo", "echo-1"

            def complete(self, messages, *, purpose):
                return Completion(text=messages[-1].content, model=self.model)
    """

    name: str
    model: str

    def complete(self, messages: list[Message], *, purpose: str) -> Completion: ...
