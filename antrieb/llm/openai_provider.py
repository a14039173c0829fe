"""The OpenAI-compatible provider: OpenAI itself, vLLM, Ollama, llama.cpp's server.

All of them speak the chat-completions API, so one client covers them. Retries are
the official ``openai`` client's own: bounded, exponential backoff with jitter, and
``Retry-After`` honoured on 408/409/429/5xx and on connection errors and timeouts.
What is left here is configuration, converting errors into antrieb's tree, and
keeping the API key out of every message, repr and traceback.

Settings (arguments win over the environment):

- ``OPENAI_BASE_URL``: the server, e.g. a local vLLM or Ollama (default: OpenAI's).
- ``OPENAI_API_KEY``: the key; a local server that needs none may go without.
- ``ANTRIEB_MODEL``, then ``OPENAI_MODEL``: the model name.
- ``ANTRIEB_MAX_TOKENS``: the bound on each answer's length in tokens (default
  :data:`DEFAULT_MAX_TOKENS`). Every request carries it, so a model that loops stops at
  the bound with ``finish_reason="length"`` (which :func:`antrieb.llm.ask` reports as a
  cut-off answer) instead of generating until the HTTP timeout.

Example::

    from antrieb.llm import Message, OpenAIProvider

    llm = OpenAIProvider(model="qwen2.5-coder:7b", base_url="http://127.0.0.1:11434/v1")
    print(llm.complete([Message(role="user", content="Say hi")], purpose="smoke").text)
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from antrieb.errors import ConfigError, LLMError, LLMUnavailable, MissingToolError
from antrieb.llm.base import Completion, Message, Usage

if TYPE_CHECKING:
    import openai

# Local servers ignore the key, but the openai client refuses to start without one.
_NO_KEY_PLACEHOLDER = "no-key-needed"
_REDACTED = "[redacted]"
# Enough for the longest answer the engine asks for (a synthesis of four roles' scripts
# is a few thousand tokens) with room to spare; small enough that a looping model ends
# in seconds on a hosted model and in minutes on a small local one.
DEFAULT_MAX_TOKENS = 8192
# OpenAI's reasoning models refuse "max_tokens" and want this name for the same bound;
# everything else (vLLM, llama.cpp, Ollama, older OpenAI models) knows "max_tokens".
_NEW_LIMIT_NAME = "max_completion_tokens"


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise MissingToolError(
            "the Python package 'openai'", "install it with: pip install openai"
        ) from exc
    return openai


def _display_url(url: str | None) -> str:
    """The base URL without any user:password part, for messages."""
    if not url:
        return "the default OpenAI endpoint"
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class OpenAIProvider:
    """A model behind an OpenAI-compatible chat-completions endpoint.

    ``timeout`` bounds each HTTP attempt; the client retries up to ``max_retries``
    times, so the worst case is about ``(max_retries + 1) * timeout`` plus backoff.
    Connection errors and timeouts, and 429/5xx still failing after the retries,
    raise :class:`LLMUnavailable`; any other HTTP error raises :class:`LLMError`
    with the server's message.

    Example::

        llm = OpenAIProvider()  # everything from OPENAI_* / ANTRIEB_MODEL
        done = llm.complete([Message(role="user", content="ping")], purpose="smoke")
        done.usage.total
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120,
        max_retries: int = 4,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        model = model or os.environ.get("ANTRIEB_MODEL") or os.environ.get("OPENAI_MODEL")
        if not model:
            raise ConfigError(
                "no LLM model configured: pass model=..., or set ANTRIEB_MODEL or OPENAI_MODEL"
            )
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None:
                raise ConfigError(
                    "no API key: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server "
                    "(vLLM, Ollama, llama.cpp) that needs none"
                )
            api_key = _NO_KEY_PLACEHOLDER
        if max_retries < 0 or timeout <= 0:
            raise ConfigError(
                f"need timeout > 0 and max_retries >= 0, got {timeout} and {max_retries}")
        if max_tokens is None:
            max_tokens = _env_max_tokens()
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self._limit_name = "max_tokens"
        self.model = model
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.temperature = temperature
        self._api_key = api_key
        self._openai = _import_openai()
        self._client: openai.OpenAI = self._openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=self.timeout, max_retries=max_retries
        )

    def __repr__(self) -> str:
        # Written out by hand so the key can never show up in a repr.
        return (
            f"OpenAIProvider(model={self.model!r}, base_url={_display_url(self.base_url)!r}, "
            f"timeout={self.timeout}, max_retries={self.max_retries}, "
            f"max_tokens={self.max_tokens})"
        )

    def close(self) -> None:
        """Close the HTTP connections (also done by ``with OpenAIProvider(...) as llm:``)."""
        self._client.close()

    def __enter__(self) -> OpenAIProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        """Cut the key out of text that came from elsewhere (some servers echo it back)."""
        key = self._api_key
        # Short keys are placeholders; replacing "x" everywhere would shred the message.
        if key and len(key) >= 8:
            text = text.replace(key, _REDACTED)
        return text

    def complete(self, messages: list[Message], *, purpose: str) -> Completion:
        """Send the conversation, return the first choice's text and the usage.

        ``purpose`` does not reach the server; it only labels the call for callers.
        Every request carries the :attr:`max_tokens` bound; a server that refuses the
        ``max_tokens`` name for it (OpenAI's reasoning models) gets it once more as
        ``max_completion_tokens``, and every later request uses that name.
        """
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        started = time.monotonic()
        response, error = self._create(kwargs)
        if error is not None and self._limit_name == "max_tokens" and _wants_new_name(error):
            self._limit_name = _NEW_LIMIT_NAME
            response, error = self._create(kwargs)
        if error is not None:
            # Raised outside the ``except`` on purpose: the openai exception holds the
            # request, whose headers carry the key. Chaining it (``from exc``, or the
            # implicit ``__context__``) would hand the key to every traceback printer.
            raise error
        return self._completion(response, time.monotonic() - started)

    def _create(self, kwargs: dict[str, Any]) -> tuple[Any, LLMError | None]:
        """One request with the length bound under its current name; the error converted
        (never raised from here: see :meth:`complete` for why)."""
        try:
            return self._client.chat.completions.create(
                **kwargs, **{self._limit_name: self.max_tokens}), None
        except self._openai.OpenAIError as exc:
            return None, self._convert(exc)

    def _completion(self, response: Any, seconds: float) -> Completion:
        # The client builds its response objects leniently: a server that answers
        # {"choices": 1} or a number for the content gets here, and must not crash the run.
        try:
            return self._parse_completion(response, seconds)
        except LLMError:
            raise
        except (TypeError, AttributeError, LookupError, ValueError) as exc:
            raise LLMError(
                f"the server at {_display_url(self.base_url)} answered with a malformed "
                f"completion ({type(exc).__name__}: {self._redact(str(exc))[:300]})",
                provider=self.name) from None

    def _parse_completion(self, response: Any, seconds: float) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            raise LLMError(
                f"the server at {_display_url(self.base_url)} answered without any choice "
                f"({type(response).__name__})",
                provider=self.name,
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        usage = getattr(response, "usage", None)
        text = getattr(message, "content", None)
        if text is not None and not isinstance(text, str):
            raise TypeError(f"the message content is a {type(text).__name__}, not text")
        model = getattr(response, "model", None)

        def count(name: str) -> int:  # a server's odd usage figures cost nothing
            value = getattr(usage, name, None)
            return value if isinstance(value, int) and value >= 0 else 0

        return Completion(
            # None happens (tool calls, refusals, some local servers); the parser
            # then reports an empty answer and re-asks instead of crashing here.
            text=text or "",
            model=model if isinstance(model, str) and model else self.model,
            usage=Usage(prompt_tokens=count("prompt_tokens"),
                        completion_tokens=count("completion_tokens")),
            seconds=seconds,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def _convert(self, exc: Exception) -> LLMError:
        """Turn an openai exception into antrieb's, with no trace of the key."""
        oa = self._openai
        where = _display_url(self.base_url)
        tries = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        if isinstance(exc, oa.APITimeoutError):
            reason = f"no answer from {where} within {self.timeout:g}s ({tries})"
            return LLMUnavailable(reason, provider=self.name)
        if isinstance(exc, oa.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f": {self._redact(str(cause))[:300]}" if cause else ""
            return LLMUnavailable(f"cannot reach {where} ({tries}){detail}", provider=self.name)
        if isinstance(exc, oa.APIStatusError):
            status = exc.status_code
            text = self._redact(_server_message(exc))[:2000]
            if status in (408, 409, 429) or status >= 500:
                # The client already retried these with backoff; still failing means
                # the service is overloaded or down, not that our request is wrong.
                return LLMUnavailable(f"HTTP {status} after {tries}: {text}",
                                      provider=self.name, status=status)
            return LLMError(f"HTTP {status} from {where}: {text}", provider=self.name,
                            status=status)
        return LLMError(f"{type(exc).__name__}: {self._redact(str(exc))[:2000]}",
                        provider=self.name)


def _env_max_tokens() -> int:
    value = os.environ.get("ANTRIEB_MAX_TOKENS", "").strip()
    if not value:
        return DEFAULT_MAX_TOKENS
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"ANTRIEB_MAX_TOKENS must be a whole number, got {value!r}") from None


def _wants_new_name(error: LLMError) -> bool:
    """A 400 saying this model takes ``max_completion_tokens`` instead of ``max_tokens``."""
    return error.status == 400 and _NEW_LIMIT_NAME in str(error)


def _server_message(exc: Any) -> str:
    """The human part of an error body: ``{"error": {"message": ...}}`` or plain text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
    if isinstance(body, str) and body.strip():
        return body.strip()
    return str(getattr(exc, "message", "") or exc)
