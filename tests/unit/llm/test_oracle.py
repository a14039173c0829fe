"""The answer providers: every request kind the engine makes gets the task's artifacts in
the shape that request asks for, valid against the task; what they do not know they
refuse instead of inventing it."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter

from antrieb.converge.answers import (
    DesignAnswer,
    Fix,
    RetryAnswer,
    SynthesisAnswer,
    TroubleshootAnswer,
)
from antrieb.converge.models import constrained
from antrieb.converge.prompts import design_messages
from antrieb.errors import LLMError
from antrieb.eval.providers import provider_for
from antrieb.llm import ask
from antrieb.llm.oracle import AnswerProvider
from antrieb.tasks import list_tasks

TASKS = list_tasks()
SCHEMAS = {"design": DesignAnswer, "retry": RetryAnswer, "troubleshoot": TroubleshootAnswer,
           "synthesize": SynthesisAnswer}


@pytest.mark.parametrize("spec", TASKS, ids=[t.name for t in TASKS])
@pytest.mark.parametrize("which", ["oracle", "near-miss"])
def test_every_request_kind_gets_the_tasks_answer_valid_against_the_task(spec, which):
    provider = provider_for(which, spec)
    assert isinstance(provider, AnswerProvider)
    assert (provider.name, provider.model) == (which, spec.name)
    want = spec.reference if which == "oracle" else spec.near_miss
    messages = design_messages(spec.task)
    with constrained(spec.task.constraints()):
        for purpose, schema in SCHEMAS.items():
            answer = ask(provider, messages, schema, purpose=purpose)
            if purpose == "troubleshoot":
                assert isinstance(answer, Fix)  # the fix at once, no command
            assert answer.artifacts == want
    assert provider.calls == list(SCHEMAS)  # one call each: every answer was usable


def test_design_carries_topology_and_checks_when_given():
    spec = TASKS[0]
    provider = AnswerProvider(spec.reference.model_dump(mode="json"),
                              topology=spec.task.topology.model_dump(mode="json"),
                              checks=[c.model_dump(mode="json") for c in spec.task.checks])
    open_task = spec.task.model_copy(update={"topology": None, "checks": []})
    with constrained(open_task.constraints()):
        answer = ask(provider, design_messages(open_task), DesignAnswer, purpose="design")
    assert answer.topology == spec.task.topology and answer.checks == spec.task.checks


@pytest.mark.parametrize("purpose", ["classify", "plan", ""])
def test_what_the_oracle_does_not_know_it_refuses(purpose):
    provider = AnswerProvider({"tool": "shell", "scripts": {"web": "#!/bin/bash\n"}})
    with pytest.raises(LLMError, match=f"not an answer for {purpose!r}"):
        provider.complete([], purpose=purpose)


def test_answers_cost_no_tokens_and_say_what_they_are():
    provider = AnswerProvider({"tool": "shell", "scripts": {"web": "#!/bin/bash\n"}})
    done = provider.complete([], purpose="retry")
    assert not done.usage.measured and done.finish_reason == "stop"
    assert "no model was asked" in json.loads(done.text)["explanation"]
    TypeAdapter(RetryAnswer).validate_json(done.text)


def test_artifacts_must_be_json_artifacts():
    with pytest.raises(TypeError, match="tool"):
        AnswerProvider({"scripts": {}})


def test_other_specs_go_to_the_run_as_they_are():
    assert provider_for("openai:gpt-4o", TASKS[0]) == "openai:gpt-4o"
