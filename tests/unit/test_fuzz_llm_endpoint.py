"""A model endpoint that is down, slow, rate-limited, failing or talking garbage: the run
ends with a status and a reason, the record says so, nothing crashes.

The endpoint is a real HTTP server on 127.0.0.1 speaking the chat-completions API
(tests/unit/llm/chat_server.py), so the real openai client and its retries run; the
cluster is the in-memory twin (the model fails before any cluster is needed).
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antrieb.converge import Converger, Task
from antrieb.converge.record import load_run
from antrieb.llm import OpenAIProvider, Recording

from .converge.fakes import World
from .llm.chat_server import ChatServer, Reply

TASK = {"name": "tiny", "request": "a file /srv/hello saying hi", "max_nodes": 1,
        "topology": {"nodes": [{"name": "node1", "role": "app"}]}}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))


def _run(base_url: str, timeout: float = 5.0):
    provider = OpenAIProvider(model="m", base_url=base_url, api_key="sk-x", timeout=timeout,
                              max_retries=1)
    conv = Converger(Task.model_validate(TASK), provider=provider,
                     cluster_factory=World().factory())
    with provider:
        result = conv.run()
    record = load_run(conv.run_id)
    assert record["state"] == result.status and record["result"]["reason"] == result.reason
    recording = Recording.load(conv.recorder.dir / "llm.jsonl")  # replayable as written
    return result, [e.model_dump() for e in recording.exchanges]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_down():
    result, calls = _run(f"http://127.0.0.1:{_free_port()}/v1")
    assert result.status == "failed"
    assert result.reason.startswith("the model is unavailable: cannot reach"), result.reason
    assert calls and calls[0]["error_kind"] == "unavailable"  # the record keeps the call


def test_endpoint_too_slow():
    with ChatServer([Reply(delay=5.0)]) as server:
        result, calls = _run(server.base_url, timeout=0.5)
    assert result.status == "failed" and "no answer from" in result.reason, result.reason
    assert "within 0.5s" in result.reason and calls[0]["error_kind"] == "unavailable"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_endpoint_overloaded_or_failing(status):
    with ChatServer([Reply(status=status, body={"error": {"message": f"busy {status}"}},
                           headers={"Retry-After": "0"})]) as server:
        result, _calls = _run(server.base_url)
        asked = len(server.seen)
    assert result.status == "failed", result.reason
    assert f"HTTP {status} after 2 attempts: busy {status}" in result.reason, result.reason
    assert asked == 2  # the client retried once, as configured, then gave up


def test_endpoint_answers_prose_instead_of_json():
    with ChatServer([Reply(text="I am sorry, I cannot help with that.")]) as server:
        result, calls = _run(server.base_url)
    assert result.status == "failed"
    assert "the model gave no usable answer for 'design' after 3 attempts" in result.reason
    assert [c["response"] for c in calls] == ["I am sorry, I cannot help with that."] * 3


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([200, 201, 400, 404, 422, 500]),
       body=st.one_of(st.text(max_size=200), st.dictionaries(
           st.sampled_from(["choices", "error", "usage", "model", "x"]),
           st.none() | st.integers() | st.text(max_size=20)
           | st.lists(st.dictionaries(st.sampled_from(["message", "index"]),
                                      st.none() | st.text(max_size=20)), max_size=2),
           max_size=4)))
def test_garbage_from_the_endpoint_ends_the_run_with_a_reason(status, body):
    with ChatServer([Reply(status=status, body=body)]) as server:
        result, _calls = _run(server.base_url)
    assert result.status == "failed" and result.reason
    assert not result.reason.startswith("internal error"), result.reason


def test_runs_close_the_connections_of_the_provider_they_made(monkeypatch):
    # a notebook or the MCP server keeps finished Convergers around: each must not keep
    # its HTTP connections open
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    task = Task.model_validate(TASK)
    with ChatServer([Reply(text="no JSON here")]) as server:
        for key, value in {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-x",
                           "ANTRIEB_MODEL": "m", "ANTRIEB_STORE": "off"}.items():
            monkeypatch.setenv(key, value)
        Converger(task, provider="openai", cluster_factory=World().factory()).run()
        before = fds()
        kept = [Converger(task, provider="openai", cluster_factory=World().factory())
                for _ in range(5)]
        for conv in kept:
            assert conv.run().status == "failed"
        assert fds() <= before + 1, f"{fds() - before} descriptors more after 5 runs"
