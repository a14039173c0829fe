"""The exceptions antrieb raises. Every one derives from :class:`AntriebError`.

::

    AntriebError
    ├── ConfigError            bad input caught before anything starts
    │   ├── UnknownImageError  image name not in the catalogue (carries the known names)
    │   ├── TooManyNodesError  more nodes than a cluster may have
    │   ├── InvalidNameError   a node name that is not a valid hostname, or a duplicate
    │   ├── RecordingFormatError  an LLM recording file that cannot be read (path, where)
    │   ├── TaskError          a task, example or run record that cannot be used (where, problem)
    │   │   └── TaskRefused    a catalogue task whose checks a trivial command passes (reasons)
    │   └── UnknownNameError   no example / run of that name (carries the known names)
    ├── StateError             a method called in the wrong state (carries state, required)
├── UnsupportedError       the chosen driver cannot do this (carries driver, what)
├── LimitError             a limit on clusters or sizes would be passed (carries limit, value)
    ├── MissingToolError       a host program or package is missing (carries the install hint)
    ├── ImageBuildError        building an image failed (carries the step and its output tail)
    ├── VMError                a VM failed to start or to restore (carries console tail, argv)
    │   └── BootTimeout        the VM did not come up in time
    ├── SupervisorError        the process that owns a cluster died or refused a request
    ├── ConvergeError          a convergence step could not be carried out (carries the step);
    │                          runs end with a status and a reason, never with this
    ├── NodeError              talking to a node failed
    │   ├── CommandTimeout     a remote command outlived its timeout (carries the partial result)
    │   └── CommandFailed      a remote command exited non-zero with ``check=True`` (carries result)
    └── LLMError               a model call failed (carries provider, HTTP status if any)
        ├── LLMUnavailable     unreachable, timed out, or still 429/5xx after the retries (reason)
        ├── LLMOutputError     no usable answer after the re-asks (purpose, attempts, last error)
        └── ReplayMismatch     a request does not match the recording being replayed (index)
"""

from __future__ import annotations

from typing import Any


class AntriebError(Exception):
    """Root of every error antrieb raises on purpose."""


class ConfigError(AntriebError, ValueError):
    """Bad input, found before anything was started."""


class UnsupportedError(AntriebError):
    def __init__(self, driver: str, what: str):
        self.driver, self.what = driver, what
        super().__init__(f"{what} is not supported by the {driver} driver (use the qemu "
                         f"driver: ANTRIEB_DRIVER=qemu)")


class LimitError(AntriebError):
    """A request over a limit: ``limit`` names the setting, ``value`` is its value."""

    def __init__(self, limit: str, value: float, message: str):
        self.limit, self.value = limit, value
        super().__init__(f"{message} (limit {limit}={value:g})")


class UnknownImageError(ConfigError):
    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, known
        super().__init__(f"unknown image {name!r}; known images: {', '.join(known) or 'none'}")


class TooManyNodesError(ConfigError):
    def __init__(self, asked: int, limit: int):
        self.asked, self.limit = asked, limit
        super().__init__(f"a cluster has at most {limit} nodes, {asked} were asked for")


class InvalidNameError(ConfigError):
    pass


class RecordingFormatError(ConfigError):
    def __init__(self, path: Any, where: str, problem: str):
        self.path, self.where, self.problem = path, where, problem
        super().__init__(f"LLM recording {path}: {where}: {problem}")


class TaskError(ConfigError):
    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


class TaskRefused(TaskError):
    """A catalogue task refused: its checks pass without the task being done (``reasons``)."""

    def __init__(self, where: str, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__(where, "refused: " + "; ".join(self.reasons))


class UnknownNameError(ConfigError):
    def __init__(self, what: str, name: str, known: list[str]):
        self.what, self.name, self.known = what, name, known
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        super().__init__(f"no {what} {name!r}; known: {shown or 'none'}")


class ConvergeError(AntriebError):
    """A step of a convergence run could not be carried out (not: the code under test failed)."""

    def __init__(self, step: str, message: str):
        self.step = step
        super().__init__(f"{step}: {message}")


class StateError(AntriebError):
    def __init__(self, what: str, state: Any, required: Any):
        self.state, self.required = state, required
        super().__init__(f"{what} is {state}, this needs {required}")


class MissingToolError(AntriebError):
    def __init__(self, what: str, hint: str):
        self.what, self.hint = what, hint
        super().__init__(f"{what} is missing: {hint}")


class ImageBuildError(AntriebError):
    def __init__(self, image: str, step: str, detail: str = ""):
        self.image, self.step, self.detail = image, step, detail
        tail = f"\n{detail[-4000:]}" if detail else ""
        super().__init__(f"building image {image!r} failed at {step}{tail}")


class VMError(AntriebError):
    def __init__(self, node: str, message: str, *, console_tail: str = "",
                 argv: list[str] | None = None, exit_code: int | None = None):
        self.node, self.console_tail = node, console_tail
        self.argv, self.exit_code = argv, exit_code
        tail = f"\n--- console of {node} (last lines) ---\n{console_tail}" if console_tail else ""
        super().__init__(f"{node}: {message}{tail}")


class BootTimeout(VMError):
    pass


class SupervisorError(AntriebError):
    pass


class NodeError(AntriebError):
    pass


class CommandTimeout(NodeError):
    def __init__(self, result: Any):
        self.result = result
        super().__init__(f"{result.node}: {result.command!r} timed out after {result.seconds:.1f}s")


class CommandFailed(NodeError):
    def __init__(self, result: Any):
        self.result = result
        tail = (result.stderr or result.stdout)[-2000:]
        super().__init__(f"{result.node}: {result.command!r} exited {result.exit_status}\n{tail}")


class LLMError(AntriebError):
    """A model call failed. Messages never contain the API key (providers redact it)."""

    def __init__(self, message: str, *, provider: str = "", status: int | None = None):
        self.provider, self.status = provider, status
        super().__init__(f"{provider}: {message}" if provider else message)


class LLMUnavailable(LLMError):
    """The model could not be reached, timed out, or kept answering 429/5xx."""

    def __init__(self, reason: str, *, provider: str = "", status: int | None = None):
        self.reason = reason
        super().__init__(f"model unavailable: {reason}", provider=provider, status=status)


class LLMOutputError(LLMError):
    """The model's answers could not be used (not JSON, wrong fields, empty, huge)."""

    def __init__(self, purpose: str, attempts: int, last_error: str, last_text_tail: str = ""):
        self.purpose, self.attempts = purpose, attempts
        self.last_error, self.last_text_tail = last_error, last_text_tail
        tail = f"\n--- end of the last answer ---\n{last_text_tail}" if last_text_tail else ""
        plural = "s" if attempts != 1 else ""
        super().__init__(
            f"no usable answer for {purpose!r} after {attempts} attempt{plural}: {last_error}{tail}"
        )


class ReplayMismatch(LLMError):
    """A request differs from what the recording holds next, or the recording ran out."""

    def __init__(self, index: int, message: str):
        self.index = index
        super().__init__(f"exchange {index}: {message}", provider="replay")
