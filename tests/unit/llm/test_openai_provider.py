"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1.

The official client's own retry code runs here for real: these tests are what proves
that backoff, Retry-After and the retry bound behave as antrieb promises.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback

import pytest

from antrieb import events
from antrieb.errors import ConfigError, LLMError, LLMUnavailable
from antrieb.llm import Message, OpenAIProvider, ask_text, get_provider

from .chat_server import ChatServer, Reply, completion, error_body

CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
HELLO = [Message(role="system", content="You are terse."), Message(role="user", content="Hi")]


@pytest.fixture
def make_provider():
    made: list[OpenAIProvider] = []

    def make(server: ChatServer | str, **kwargs) -> OpenAIProvider:
        base = server if isinstance(server, str) else server.base_url
        kwargs.setdefault("model", "test-model")
        kwargs.setdefault("api_key", "sk-test")
        provider = OpenAIProvider(base_url=base, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_success_returns_text_usage_and_sends_the_conversation(make_provider):
    with ChatServer([Reply(text="Hello there")]) as server:
        done = make_provider(server).complete(HELLO, purpose="smoke")
    assert done.text == "Hello there"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total) == (12, 3, 15)
    assert done.model == "test-model" and done.finish_reason == "stop" and done.seconds > 0
    (seen,) = server.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "test-model"
    assert seen.body["messages"] == [m.model_dump() for m in HELLO]
    assert seen.headers["authorization"] == "Bearer sk-test"


def test_429_with_retry_after_waits_then_succeeds(make_provider):
    limited = Reply(429, error_body("Rate limit reached", "rate_limit"),
                    headers={"Retry-After": "1"})
    replies = [limited, Reply(text="finally")]
    with ChatServer(replies) as server:
        started = time.monotonic()
        done = make_provider(server).complete(HELLO, purpose="smoke")
        elapsed = time.monotonic() - started
    assert done.text == "finally"
    assert len(server.seen) == 2
    gap = server.seen[1].at - server.seen[0].at
    # the server's 1 s, not the client's own 0.5 s backoff; upper bounds only catch a
    # wait of another order (the machine may be busy: no tight timing here)
    assert 0.95 <= gap < 10, gap
    assert elapsed < 20


def test_always_429_stops_after_max_retries(make_provider):
    # retry-after-ms keeps the test fast; the bound on attempts is what is checked here
    always = Reply(429, error_body("Rate limit reached", "rate_limit"),
                   headers={"retry-after-ms": "20"})
    with ChatServer([always]) as server:
        provider = make_provider(server, max_retries=3)
        with pytest.raises(LLMUnavailable) as info:
            provider.complete(HELLO, purpose="smoke")
    assert len(server.seen) == 4  # one try and three retries, then it gives up
    assert info.value.status == 429
    assert "Rate limit reached" in str(info.value) and "4 attempts" in str(info.value)


def test_500_then_200_is_retried_with_backoff(make_provider):
    replies = [Reply(500, error_body("upstream crashed", "server_error")), Reply(text="ok now")]
    with ChatServer(replies) as server:
        done = make_provider(server).complete(HELLO, purpose="smoke")
    assert done.text == "ok now" and len(server.seen) == 2
    gap = server.seen[1].at - server.seen[0].at
    assert 0.3 <= gap < 10, gap  # the client's first backoff step: 0.5 s minus jitter


def test_other_4xx_is_an_error_with_the_server_message_and_no_retry(make_provider):
    reply = Reply(400, error_body("This model's maximum context length is 8192 tokens"))
    with ChatServer([reply]) as server, pytest.raises(LLMError) as info:
        make_provider(server).complete(HELLO, purpose="smoke")
    assert not isinstance(info.value, LLMUnavailable)
    assert info.value.status == 400 and "maximum context length" in str(info.value)
    assert len(server.seen) == 1


def test_server_down_is_unavailable_quickly(make_provider):
    provider = make_provider(closed_port_url(), max_retries=1)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable) as info:
        provider.complete(HELLO, purpose="smoke")
    assert time.monotonic() - started < 20  # no long backoff for a closed port
    assert "cannot reach http://127.0.0.1:" in str(info.value)


def test_slow_server_times_out_into_unavailable(make_provider):
    with ChatServer([Reply(delay=10)]) as server:
        provider = make_provider(server, timeout=0.3, max_retries=1)
        started = time.monotonic()
        with pytest.raises(LLMUnavailable) as info:
            provider.complete(HELLO, purpose="smoke")
        elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 9, elapsed  # two attempts of 0.3 s plus one backoff, not 10 s
    assert "within 0.3s" in str(info.value) and len(server.seen) == 2


def test_a_200_that_is_not_a_completion_is_an_error(make_provider):
    with ChatServer([Reply(body="<html>proxy login</html>")]) as server, pytest.raises(LLMError):
        make_provider(server, max_retries=0).complete(HELLO, purpose="smoke")


def test_empty_content_becomes_empty_text(make_provider):
    body = completion("")
    body["choices"][0]["message"]["content"] = None
    with ChatServer([Reply(body=body)]) as server:
        assert make_provider(server).complete(HELLO, purpose="smoke").text == ""


def _assert_clean(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert CANARY not in text
    # the openai exception holds the request and its Authorization header: never chained
    assert exc.__cause__ is None and exc.__context__ is None


def test_the_api_key_never_leaks(make_provider, caplog):
    caplog.set_level(logging.DEBUG)
    seen_events: list[events.Event] = []
    # Some servers echo the key they rejected; the message must arrive redacted.
    echo = Reply(401, error_body(f"Incorrect API key provided: {CANARY}.", "invalid_api_key"))
    with ChatServer([echo]) as server, events.subscribed(seen_events.append):
        provider = make_provider(server, api_key=CANARY)
        with pytest.raises(LLMError) as info:
            ask_text(provider, HELLO, purpose="smoke")
    assert server.seen[0].headers["authorization"] == f"Bearer {CANARY}"  # it was really used
    assert "Incorrect API key provided: [redacted]" in str(info.value)
    _assert_clean(info.value)
    assert CANARY not in repr(provider)

    down = make_provider(closed_port_url(), api_key=CANARY, max_retries=0)
    with pytest.raises(LLMUnavailable) as info2:
        down.complete(HELLO, purpose="smoke")
    _assert_clean(info2.value)

    with ChatServer([Reply(delay=5)]) as server:
        slow = make_provider(server, api_key=CANARY, timeout=0.2, max_retries=0)
        with pytest.raises(LLMUnavailable) as info3:
            slow.complete(HELLO, purpose="smoke")
    _assert_clean(info3.value)

    assert seen_events and all(CANARY not in e.model_dump_json() for e in seen_events)
    assert CANARY not in caplog.text


def test_configuration_from_the_environment(monkeypatch):
    with ChatServer([Reply(text="from env")]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs none
        monkeypatch.delenv("OPENAI_MODEL", raising=False)
        monkeypatch.setenv("ANTRIEB_MODEL", "qwen-local")
        monkeypatch.delenv("ANTRIEB_LLM", raising=False)
        provider = get_provider(None)
        assert isinstance(provider, OpenAIProvider) and provider.model == "qwen-local"
        assert provider.complete(HELLO, purpose="smoke").text == "from env"
        provider.close()
    assert server.seen[0].body["model"] == "qwen-local"


def test_missing_model_or_key_is_a_clear_config_error(monkeypatch):
    for name in ("ANTRIEB_MODEL", "OPENAI_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="ANTRIEB_MODEL or OPENAI_MODEL"):
        OpenAIProvider()
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIProvider(model="gpt-4o-mini")
    with pytest.raises(ConfigError, match="unknown LLM spec"):
        get_provider("bard")
