"""Structured asking: extraction, validation, the re-ask loop, events, and no crash ever."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from antrieb import events
from antrieb.errors import LLMOutputError, LLMUnavailable
from antrieb.llm import Completion, Message, ask, ask_text, extract_json

from .fakes import ScriptedProvider

CASES = yaml.safe_load((Path(__file__).parent / "data" / "parse_cases.yaml").read_text())
PROMPT = [Message(role="system", content="Answer in JSON."), Message(role="user", content="Plan")]
GOOD = '{"nodes": ["lb", "web1"]}'


class Topology(BaseModel):
    nodes: list[str] = Field(min_length=1, max_length=4)
    tool: Literal["shell", "ansible"] = "shell"


@pytest.fixture
def seen():
    collected: list[events.Event] = []
    with events.subscribed(collected.append):
        yield collected


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_parse_table(case):
    provider = ScriptedProvider(case["text"])
    if "ok" in case:
        assert ask(provider, PROMPT, Topology, purpose="design").model_dump() == case["ok"]
    else:
        with pytest.raises(LLMOutputError) as info:
            ask(provider, PROMPT, Topology, purpose="design", max_attempts=1)
        assert case["error"] in info.value.last_error
        assert info.value.attempts == 1 and info.value.purpose == "design"


def test_huge_answer_is_rejected_before_parsing():
    huge = '{"nodes": ["a"], "junk": "' + "x" * 300_000 + '"}'
    with pytest.raises(LLMOutputError, match=f"{len(huge)} characters long, the limit is 200000"):
        ask(ScriptedProvider(huge), PROMPT, Topology, purpose="design", max_attempts=1)
    assert ask(ScriptedProvider(huge), PROMPT, Topology, purpose="design",
               max_chars=400_000).nodes == ["a"]


def test_deep_nesting_is_an_output_error_not_a_recursion_error():
    for text in ("[" * 150_000, "{\"a\": " * 60_000 + "1" + "}" * 60_000):
        with pytest.raises(LLMOutputError):
            extract_json(text)


def test_extract_json_examples():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json("noise [1, 2] noise") == [1, 2]
    with pytest.raises(LLMOutputError, match="empty"):
        extract_json("")


def test_bad_then_good_succeeds_on_attempt_2_and_re_asks_with_the_error(seen):
    provider = ScriptedProvider('{"nodes": "lb"}', GOOD)
    assert ask(provider, PROMPT, Topology, purpose="design").nodes == ["lb", "web1"]
    second = provider.calls[1][1]
    assert [m.role for m in second] == ["system", "user", "assistant", "user"]
    assert second[2].content == '{"nodes": "lb"}'
    assert "nodes: Input should be a valid list" in second[3].content
    assert "Traceback" not in second[3].content and "https://" not in second[3].content

    exchanges = [e for e in seen if isinstance(e, events.LLMExchange)]
    finished = [e for e in seen if isinstance(e, events.LLMCallFinished)]
    assert [(e.attempt, e.ok) for e in finished] == [(1, False), (2, True)]
    assert finished[0].error.startswith("the JSON does not match the schema")
    assert finished[1].prompt_tokens == 40 and finished[1].completion_tokens == 5
    assert all(e.seconds == 0.25 and e.provider == "scripted" for e in finished)
    assert len({e.call_id for e in [*exchanges, *finished]}) == 1
    assert [e.response for e in exchanges] == ['{"nodes": "lb"}', GOOD]
    assert exchanges[0].messages == [m.model_dump() for m in PROMPT]
    assert len(exchanges[1].messages) == 4
    # the events travel as JSON into the run store
    for event in seen:
        assert events.event_adapter.validate_json(event.model_dump_json()) == event


def test_always_bad_ends_in_llm_output_error_after_max_attempts(seen):
    provider = ScriptedProvider("no idea")
    with pytest.raises(LLMOutputError) as info:
        ask(provider, PROMPT, Topology, purpose="design", max_attempts=3)
    err = info.value
    assert (err.purpose, err.attempts, err.last_text_tail) == ("design", 3, "no idea")
    assert "no JSON object" in err.last_error and "after 3 attempts" in str(err)
    assert len(provider.calls) == 3 and len(provider.calls[-1][1]) == 2 + 2 * 2
    assert [e.ok for e in seen if isinstance(e, events.LLMCallFinished)] == [False] * 3


def test_a_huge_bad_answer_is_echoed_back_cut_short():
    provider = ScriptedProvider("x" * 250_000, GOOD)
    ask(provider, PROMPT, Topology, purpose="design")
    echoed = provider.calls[1][1][2].content
    assert len(echoed) < 5_000 and "more characters cut" in echoed


def test_provider_failure_is_reported_and_passed_through(seen):
    provider = ScriptedProvider(LLMUnavailable("HTTP 503 after 5 attempts", provider="x"))
    with pytest.raises(LLMUnavailable):
        ask(provider, PROMPT, Topology, purpose="retry")
    (finished,) = [e for e in seen if isinstance(e, events.LLMCallFinished)]
    assert not finished.ok and "LLMUnavailable" in finished.error and "503" in finished.error
    assert not [e for e in seen if isinstance(e, events.LLMExchange)]


def test_cut_off_answers_say_so_in_the_re_ask():
    class CutOff(ScriptedProvider):
        def complete(self, messages, *, purpose):
            done = super().complete(messages, purpose=purpose)
            reason = "length" if len(self.calls) == 1 else "stop"
            return Completion(**{**done.model_dump(), "finish_reason": reason})

    provider = CutOff('{"nodes": ["lb", "we', GOOD)
    ask(provider, PROMPT, Topology, purpose="design")
    assert "token limit" in provider.calls[1][1][3].content


def test_ask_text_re_asks_only_empty_answers(seen):
    provider = ScriptedProvider("   ", "  The service is not enabled.\n")
    assert ask_text(provider, PROMPT, purpose="diagnose") == "The service is not enabled."
    finished = [e for e in seen if isinstance(e, events.LLMCallFinished)]
    assert [(e.purpose, e.ok) for e in finished] == [("diagnose", False), ("diagnose", True)]
    with pytest.raises(LLMOutputError, match="empty"):
        ask_text(ScriptedProvider(""), PROMPT, purpose="diagnose", max_attempts=2)


def test_schema_can_be_any_type():
    assert ask(ScriptedProvider("[1, 2, 3]"), PROMPT, list[int], purpose="x") == [1, 2, 3]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_texts = st.builds(json.dumps, json_values)
answers = st.one_of(
    st.text(),
    json_texts,
    st.builds(lambda a, j, b: f"{a}{j}{b}", st.text(), json_texts, st.text()),
    st.builds(lambda a, j: f"{a}\n```json\n{j}\n```\n", st.text(), json_texts),
    st.text(alphabet="{}[]\",:0123456789 \n`json", max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(answers)
def test_extract_json_raises_only_llm_output_error(text):
    with contextlib.suppress(LLMOutputError):  # anything else fails the test
        extract_json(text)


@settings(max_examples=200, deadline=None)
@given(answers)
def test_ask_raises_only_llm_output_error(text):
    try:
        result = ask(ScriptedProvider(text), PROMPT, Topology, purpose="design", max_attempts=2)
    except LLMOutputError as exc:
        assert exc.attempts == 2
    else:
        assert isinstance(result, Topology)
