"""Which model answers a run of the evaluation: a spec per model, a provider per run.

Besides every spec :func:`antrieb.llm.get_provider` knows (``openai``, ``openai:MODEL``,
``replay:PATH``), two name the task's own answers (:class:`antrieb.llm.oracle.AnswerProvider`):

- ``oracle``: the task's reference, whatever the engine asks: a working harness
  scores 1.0 with it on every verified task;
- ``near-miss``: the task's near miss: it scores 0.0, and the failure classes show
  what the engine made of the mistake.

Example::

    provider_for("oracle", load_task("nginx-static"))   # AnswerProvider
    provider_for("openai:gpt-4o", spec)                 # "openai:gpt-4o": the run makes it
"""

from __future__ import annotations

from typing import Any

from antrieb.llm import Provider, get_provider
from antrieb.llm.oracle import AnswerProvider
from antrieb.tasks.model import CatalogueTask

ANSWER_SPECS = ("oracle", "near-miss")


def provider_for(spec: str, task: CatalogueTask) -> Provider | str:
    """The provider of one run of ``task``. A spec string is handed to the Converger,
    which makes the provider and closes it when the run ends (its HTTP connections)."""
    if spec == "oracle":
        artifacts = task.reference
    elif spec == "near-miss":
        artifacts = task.near_miss
    else:
        return spec
    return AnswerProvider(artifacts.model_dump(mode="json"), name=spec, model=task.name)


def check_spec(spec: str) -> None:
    """Fail before any VM starts if ``spec`` cannot make a provider (no model set, no
    key, an unknown kind): :class:`~antrieb.errors.ConfigError`."""
    if spec in ANSWER_SPECS:
        return
    provider: Any = get_provider(spec)
    close = getattr(provider, "close", None)
    if close is not None:
        close()
