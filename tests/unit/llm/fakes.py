"""An in-memory provider twin: answers from a script, remembers what it was asked."""

from __future__ import annotations

from antrieb.errors import LLMError
from antrieb.llm import Completion, Message, Usage


class ScriptedProvider:
    """Answers with the scripted texts in order; an exception in the script is raised."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, *answers: str | LLMError) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, list[Message]]] = []

    def complete(self, messages: list[Message], *, purpose: str) -> Completion:
        self.calls.append((purpose, list(messages)))
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, LLMError):
            raise answer
        return Completion(text=answer, model=self.model, seconds=0.25,
                          usage=Usage(prompt_tokens=10 * len(messages), completion_tokens=5))
