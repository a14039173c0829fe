"""Property tests over every parser of model output: whatever the model says, antrieb
answers with its own error (``LLMOutputError``) or a valid model, never a crash, and a
run fed garbage ends ``failed`` with a reason while its record keeps every answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from antrieb.converge import Converger, Task
from antrieb.converge.answers import (
    DesignAnswer,
    RetryAnswer,
    SynthesisAnswer,
    TroubleshootAnswer,
)
from antrieb.converge.models import Constraints, Topology, constrained
from antrieb.converge.record import load_events, load_run
from antrieb.errors import LLMOutputError
from antrieb.llm import Completion, Message, Recording, Usage, ask, ask_text, extract_json

from .converge.fakes import World

PROMPT = [Message(role="user", content="answer in JSON")]
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=25)

VALID = {
    "design": {"topology": {"nodes": [{"name": "node1", "role": "app"}]},
               "artifacts": {"tool": "shell", "scripts": {"app": "echo hi > /srv/hello"}},
               "checks": [{"name": "hello", "node": "node1", "command": "cat /srv/hello",
                           "expect": {"stdout_regex": ["hi"]}}]},
    "retry": {"explanation": "x", "artifacts": {"tool": "shell", "scripts": {"app": "true"}}},
    "troubleshoot": {"action": "run", "node": "node1", "command": "ss -ltnp"},
    "synthesize": {"artifacts": {"tool": "shell", "scripts": {"app": "true"}}, "notes": ""},
}
SCHEMAS: dict[str, Any] = {"design": DesignAnswer, "retry": RetryAnswer,
                           "troubleshoot": TroubleshootAnswer, "synthesize": SynthesisAnswer}
CONSTRAINTS = Constraints(max_nodes=2, tool="shell", roles=("app",), nodes=("node1",),
                          need=("topology", "checks"))


@st.composite
def mutated(draw, base: Any) -> Any:
    """``base`` with one value somewhere replaced, a key dropped, or a key added."""
    if isinstance(base, dict) and base:
        key = draw(st.sampled_from(sorted(base)))
        how = draw(st.sampled_from(["replace", "drop", "add", "recurse"]))
        out = dict(base)
        if how == "replace":
            out[key] = draw(json_values)
        elif how == "drop":
            out.pop(key)
        elif how == "add":
            out[draw(st.text(max_size=10))] = draw(json_values)
        else:
            out[key] = draw(mutated(base[key]))
        return out
    if isinstance(base, list) and base:
        i = draw(st.integers(0, len(base) - 1))
        out = list(base)
        choice = draw(st.sampled_from(["replace", "repeat", "recurse"]))
        if choice == "replace":
            out[i] = draw(json_values)
        elif choice == "repeat":
            out = out * draw(st.integers(2, 8))  # 7 nodes, duplicate names...
        else:
            out[i] = draw(mutated(base[i]))
        return out
    return draw(json_values)


def wrapped(value: Any) -> st.SearchStrategy[str]:
    """How models wrap JSON: bare, fenced, amid prose, cut off, doubled."""
    text = json.dumps(value)
    return st.sampled_from([
        text, f"```json\n{text}\n```", f"Sure! Here it is:\n{text}\nHope that helps.",
        text[: max(1, len(text) // 2)], text + text, "```\n" + text, text.replace('"', "'"),
    ])


model_texts = st.one_of(
    # line separators JSON leaves raw: a reader splitting at them loses the record's lines
    st.sampled_from(["a\u2028b", "{\"x\": \"\x85\"}", "\u2029"]),
    st.text(max_size=300),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    json_values.map(json.dumps),
    st.sampled_from(list(VALID)).flatmap(lambda p: mutated(VALID[p])).flatmap(wrapped),
    st.sampled_from(["", " ", "null", "[]", "{}", "[" * 5000, "{" * 3000, "\x00" * 10,
                     '{"a": 1e999}', '{"a": NaN}', "\ud800".encode("utf-8", "surrogatepass")
                     .decode("utf-8", "replace")]),
)


class Answers:
    """A provider answering with given texts (then repeating the last)."""

    name, model = "fuzz", "fuzz-1"

    def __init__(self, *texts: str) -> None:
        self.texts, self.calls = list(texts), 0

    def complete(self, messages: list[Message], *, purpose: str) -> Completion:
        self.calls += 1
        text = self.texts[min(self.calls, len(self.texts)) - 1]
        return Completion(text=text, model=self.model, usage=Usage(prompt_tokens=1))


@FUZZ
@given(text=model_texts)
def test_extract_json_raises_only_output_errors(text):
    try:
        extract_json(text)
    except LLMOutputError as exc:
        assert exc.purpose and exc.last_error


@FUZZ
@given(purpose=st.sampled_from(list(SCHEMAS)), data=st.data())
def test_every_answer_schema_parses_or_says_why(purpose, data):
    text = data.draw(model_texts | mutated(VALID[purpose]).flatmap(wrapped))
    with constrained(CONSTRAINTS):
        try:
            answer = ask(Answers(text), PROMPT, SCHEMAS[purpose], purpose=purpose,
                         max_attempts=1)
        except LLMOutputError as exc:
            assert exc.attempts == 1 and exc.last_error
            return
        # what parsed is valid under the task's limits: at most 2 nodes, known roles
        TypeAdapter(SCHEMAS[purpose]).validate_python(
            TypeAdapter(SCHEMAS[purpose]).dump_python(answer))
        if purpose == "design":
            assert answer.topology is None or len(answer.topology.nodes) <= 2


@FUZZ
@given(text=model_texts)
def test_free_text_answers_parse_or_say_why(text):
    try:
        assert ask_text(Answers(text), PROMPT, purpose="diagnose", max_attempts=1)
    except LLMOutputError as exc:
        assert "empty" in exc.last_error or "limit" in exc.last_error


@FUZZ
@given(nodes=st.lists(st.fixed_dictionaries({"name": st.text(max_size=70),
                                               "role": st.text(max_size=45)}), max_size=8))
def test_topologies_are_valid_or_refused(nodes):
    try:
        with constrained(Constraints(max_nodes=4)):
            topo = Topology.model_validate({"nodes": nodes})
    except ValueError:  # pydantic's ValidationError, with the reason for the model
        return
    assert 1 <= len(topo.nodes) <= 4 and len(set(topo.names())) == len(topo.nodes)


TASK = {"name": "tiny", "request": "a file /srv/hello saying hi", "max_nodes": 1,
        "topology": {"nodes": [{"name": "node1", "role": "app"}]}}


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(texts=st.lists(model_texts, min_size=3, max_size=3))
def test_a_run_fed_garbage_ends_with_a_reason_and_loses_nothing(private_cache, texts):
    good = json.dumps(VALID["design"])
    texts = [t for t in texts if t.strip() != good]
    conv = Converger(Task.model_validate(TASK), provider=Answers(*texts),
                     cluster_factory=World().factory())
    result = conv.run()
    if result.status == "failed":
        assert "no usable answer" in result.reason or "model" in result.reason, result.reason
    record = load_run(conv.run_id)
    assert record["state"] == result.status and record["result"]["reason"] == result.reason
    recording = Recording.load(conv.recorder.dir / "llm.jsonl")  # replayable as written
    responses = [e.response for e in recording.exchanges if e.response is not None]
    exchanges = [e["response"] for e in load_events(conv.run_id) if e["kind"] == "llm_exchange"]
    assert exchanges, "no answer reached the record"
    # every answer the model gave is in the record, verbatim, in order
    assert exchanges == responses[: len(exchanges)]
    assert exchanges[: len(texts)] == texts[: len(exchanges)]
