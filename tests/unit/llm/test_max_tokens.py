"""Every request carries a bound on the answer's length, and an answer cut off at it ends
the run with a clear reason instead of a long wait.

The endpoint is a real HTTP server on 127.0.0.1 speaking the chat-completions API
(chat_server.py), so the real openai client sends what a real server would receive.
"""

from __future__ import annotations

import pytest

from antrieb.converge import Converger, Task
from antrieb.converge.record import load_run
from antrieb.errors import ConfigError
from antrieb.llm import Message, OpenAIProvider, Recording
from antrieb.llm.openai_provider import DEFAULT_MAX_TOKENS

from ..converge.fakes import World
from .chat_server import ChatServer, Reply, completion, error_body

HELLO = [Message(role="user", content="Hi")]
TASK = {"name": "tiny", "request": "a file /srv/hello saying hi", "max_nodes": 1,
        "topology": {"nodes": [{"name": "node1", "role": "app"}]}}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANTRIEB_MAX_TOKENS", raising=False)


def _provider(server: ChatServer, **kwargs) -> OpenAIProvider:
    return OpenAIProvider(model="m", base_url=server.base_url, api_key="sk-x",
                          max_retries=0, **kwargs)


def cut_off(text: str, completion_tokens: int = 64) -> dict:
    body = completion(text, done=completion_tokens)
    body["choices"][0]["finish_reason"] = "length"
    return body


def test_every_request_carries_the_default_bound():
    with ChatServer([Reply(text="hi")]) as server, _provider(server) as llm:
        llm.complete(HELLO, purpose="smoke")
        llm.complete(HELLO, purpose="smoke")
    assert [s.body["max_tokens"] for s in server.seen] == [DEFAULT_MAX_TOKENS] * 2
    assert "max_completion_tokens" not in server.seen[0].body


def test_the_bound_comes_from_the_argument_or_the_environment(monkeypatch):
    with ChatServer([Reply(text="hi")]) as server:
        with _provider(server, max_tokens=300) as llm:
            llm.complete(HELLO, purpose="smoke")
        monkeypatch.setenv("ANTRIEB_MAX_TOKENS", "1200")
        with _provider(server) as llm:
            llm.complete(HELLO, purpose="smoke")
            assert "max_tokens=1200" in repr(llm)
    assert [s.body["max_tokens"] for s in server.seen] == [300, 1200]


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_bound_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("ANTRIEB_MAX_TOKENS", value)
    with pytest.raises(ConfigError, match=r"max_tokens|ANTRIEB_MAX_TOKENS"):
        OpenAIProvider(model="m", base_url="http://127.0.0.1:9/v1")


def test_a_server_that_wants_max_completion_tokens_gets_it_from_then_on():
    refusal = error_body("Unsupported parameter: 'max_tokens' is not supported with this "
                         "model. Use 'max_completion_tokens' instead.")
    with ChatServer([Reply(status=400, body=refusal), Reply(text="one"),
                     Reply(text="two")]) as server, _provider(server, max_tokens=500) as llm:
        assert llm.complete(HELLO, purpose="smoke").text == "one"
        assert llm.complete(HELLO, purpose="smoke").text == "two"
    bodies = [s.body for s in server.seen]
    assert bodies[0]["max_tokens"] == 500 and "max_completion_tokens" not in bodies[0]
    assert [b.get("max_completion_tokens") for b in bodies[1:]] == [500, 500]
    assert all("max_tokens" not in b for b in bodies[1:])


def test_an_answer_cut_off_at_the_bound_ends_the_run_with_that_reason():
    looping = '{"artifacts": {"tool": "shell", "scripts": {"app": "#!/bin/bash\\necho hi' \
        + " hi" * 40
    with ChatServer([Reply(body=cut_off(looping))]) as server, \
            _provider(server, max_tokens=64) as llm:
        conv = Converger(Task.model_validate(TASK), provider=llm,
                         cluster_factory=World().factory())
        result = conv.run()
        asked = [s.body["max_tokens"] for s in server.seen]
    assert result.status == "failed"
    assert "no usable answer for 'design' after 3 attempts" in result.reason
    assert "cut off at the token limit" in result.reason, result.reason
    assert asked == [64, 64, 64]  # each re-ask is bounded too
    # the server's usage is what the run counts, and the record is readable as written
    assert result.cost.completion_tokens == 3 * 64 and result.cost.prompt_tokens == 3 * 12
    assert load_run(conv.run_id)["state"] == "failed"
    recording = Recording.load(conv.recorder.dir / "llm.jsonl")
    assert [x.response for x in recording.exchanges] == [looping] * 3
