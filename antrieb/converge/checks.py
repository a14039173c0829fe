"""Run a task's checks on a live cluster.

Command checks run a command on a node and compare exit status and stdout patterns.
Host assertions (service running, port listening, file contains, package installed)
go through pytest-testinfra's modules, with a small testinfra backend that sends
every command through our :meth:`antrieb.cluster.Node.run` (the node's one reused SSH
transport, output capped, timed, on the event stream).

Example::

    host = testinfra_host(cluster["web1"])
    host.service("nginx").is_running
    results = run_checks(cluster, task.checks)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from antrieb.converge.models import (
    Check,
    FileContains,
    PackageInstalled,
    PortListening,
    ServiceRunning,
)
from antrieb.converge.results import CheckResult, tail


class RunsCommands(Protocol):
    """What checks need of a node: :class:`antrieb.cluster.Node` or a test twin."""

    name: str

    def run(self, command: str, timeout: float = 600.0, *, check: bool = False,
            output_cap: int | None = None) -> Any: ...


def _backend_class() -> type:
    """Our testinfra backend, built on first use so importing this module stays cheap."""
    from testinfra.backend import base

    class NodeBackend(base.BaseBackend):
        """testinfra backend over :meth:`Node.run`; commands run as root already."""

        NAME = "antrieb"

        def __init__(self, node: RunsCommands, timeout: float = 60.0, **kwargs: Any):
            self.node, self.timeout = node, timeout
            super().__init__(node.name, **kwargs)
            self._encoding = "utf-8"  # skip testinfra's probe (one more remote python run)

        def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
            cmd = self.get_command(command, *args)
            result = self.node.run(cmd, timeout=self.timeout)
            status = result.exit_status if result.exit_status is not None else 124
            return self.result(status, self.encode(cmd), result.stdout, result.stderr)

    return NodeBackend


def testinfra_host(node: RunsCommands, timeout: float = 60.0) -> Any:
    """A ``testinfra.host.Host`` whose commands run on ``node``.

    Example::

        testinfra_host(cluster["lb"]).socket("tcp://0.0.0.0:80").is_listening
    """
    import testinfra.host

    return testinfra.host.Host(_backend_class()(node, timeout=timeout))


def _assert_host(host: Any, assertion: Any) -> tuple[bool, str]:
    """(passed, detail) of one host assertion."""
    if isinstance(assertion, ServiceRunning):
        service = host.service(assertion.service)
        if not service.is_running:
            return False, f"service {assertion.service} is not running"
        if assertion.enabled and not service.is_enabled:
            return False, f"service {assertion.service} is running but not enabled"
        return True, f"service {assertion.service} is running"
    if isinstance(assertion, PortListening):
        if assertion.address is None:
            listening = host.socket.get_listening_sockets()
            want = f"{assertion.proto}://"
            found = [s for s in listening if s.startswith(want)
                     and s.rsplit(":", 1)[-1] == str(assertion.port)]
            if found:
                return True, f"listening: {', '.join(found)}"
            return False, (f"nothing listens on {assertion.proto} port {assertion.port}; "
                           f"listening: {', '.join(listening) or 'nothing'}")
        spec = f"{assertion.proto}://{assertion.address}:{assertion.port}"
        if host.socket(spec).is_listening:
            return True, f"{spec} is listening"
        listening = host.socket.get_listening_sockets()
        return False, f"{spec} is not listening; listening: {', '.join(listening) or 'nothing'}"
    if isinstance(assertion, FileContains):
        f = host.file(assertion.path)
        if not f.exists:
            return False, f"{assertion.path} does not exist"
        if not re.search(assertion.pattern, f.content_string, re.M):
            return False, f"{assertion.path} does not match /{assertion.pattern}/"
        return True, f"{assertion.path} matches /{assertion.pattern}/"
    if isinstance(assertion, PackageInstalled):
        if host.package(assertion.package).is_installed:
            return True, f"package {assertion.package} is installed"
        return False, f"package {assertion.package} is not installed"
    raise TypeError(f"unknown host assertion {assertion!r}")


def evaluate(check: Check, exit_status: int | None, stdout: str) -> tuple[bool, str]:
    """(passed, detail) of a command check's outcome against its expectations."""
    expect = check.expect
    if exit_status is None:
        return False, f"{check.command!r} timed out"
    if expect.exit_status is not None and exit_status != expect.exit_status:
        return False, f"{check.command!r} exited {exit_status}, expected {expect.exit_status}"
    for pattern in expect.stdout_regex:
        if not re.search(pattern, stdout, re.M):
            return False, f"output of {check.command!r} does not match /{pattern}/"
    for pattern in expect.stdout_not_regex:
        if re.search(pattern, stdout, re.M):
            return False, f"output of {check.command!r} matches /{pattern}/, which it must not"
    return True, "as expected"


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a module-level hook: unit tests make the settle time zero


def run_check(node: RunsCommands, check: Check, *,
              sleep: Callable[[float], None] | None = None,
              stopped: Callable[[], bool] = lambda: False) -> CheckResult:
    """Run one check, up to ``check.attempts`` times until it passes."""
    sleep = sleep or _sleep
    t0 = time.monotonic()
    result = CheckResult(name=check.name, node=check.node, passed=False)
    for attempt in range(check.attempts):
        if attempt:
            if stopped():
                break
            sleep(check.interval_s)
        if check.host is not None:
            result.assertion = check.host.kind
            try:
                passed, detail = _assert_host(testinfra_host(node, check.timeout_s), check.host)
            except Exception as exc:  # testinfra raises plain errors on odd hosts
                passed, detail = False, f"{type(exc).__name__}: {exc}"
            result.passed, result.detail = passed, detail
        else:
            assert check.command is not None
            r = node.run(check.command, timeout=check.timeout_s)
            passed, detail = evaluate(check, r.exit_status, r.stdout)
            result = CheckResult(name=check.name, node=check.node, passed=passed,
                                 detail=detail, exit_status=r.exit_status,
                                 stdout=tail(r.stdout), stderr=tail(r.stderr),
                                 timed_out=r.timed_out)
        if result.passed:
            break
    result.seconds = time.monotonic() - t0
    return result


def run_checks(nodes: Callable[[str], RunsCommands], checks: Sequence[Check], *,
               on_result: Callable[[CheckResult], None] = lambda r: None,
               stopped: Callable[[], bool] = lambda: False) -> list[CheckResult]:
    """Run every check in order on the node it names (``nodes(name)`` finds it)."""
    results = []
    for check in checks:
        if stopped():
            break
        result = run_check(nodes(check.node), check, stopped=stopped)
        on_result(result)
        results.append(result)
    return results
