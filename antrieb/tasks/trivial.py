"""The static half of "a task whose checks a trivial command passes is refused".

A check is trivial when it passes whatever the nodes hold: a command that does nothing
(``true``, ``:``, ``exit 0``, nothing at all), one that only prints text it was given
(``echo ok`` expecting ``ok``), one whose exit status is forced (``... || true``) while
nothing is asked of its output, expectations that accept anything (any exit status, no
pattern, or only patterns that match the empty text), and host assertions every fresh
node already meets (sshd running, port 22 listening, a package the image ships).

The runtime half is in :mod:`antrieb.tasks.verify`: the checks run on an untouched
fresh cluster first, and if every one passes there the task is refused too (that
catches what no rule here can read, e.g. ``test -d /etc``).

Example::

    trivial_reasons(Check(name="ok", node="web", command="true"))
    # ["the command does nothing ('true')"]
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from antrieb.converge.models import (
    Check,
    FileContains,
    PackageInstalled,
    PortListening,
    ServiceRunning,
)

_NOOPS = {"true", ":", "/bin/true", "/usr/bin/true", "exit", "exit 0", "/bin/true 0"}
# the separators of a shell list; a pipe is not one (its parts work together)
_LIST = re.compile(r"\s*(?:&&|\|\||;|\n)\s*")
# a command ending in one of these exits 0 whatever came before
_FORCED = re.compile(r"(?:\|\||;|\n)\s*(?:true|:|exit(?:\s+0)?)\s*;?\s*$")
_PRINT_ONLY = re.compile(r"^(?:echo|printf)(?:\s[^$`|<>()]*)?$")
# what every fresh node of every image runs and has
_BASE_SERVICES = {"ssh", "sshd", "ssh.service", "sshd.service", "systemd-journald",
                  "antrieb-agent"}


def _parts(command: str) -> list[str]:
    return [p.strip() for p in _LIST.split(command.strip()) if p.strip()]


def _any_text(patterns: Iterable[str]) -> bool:
    """Every pattern matches the empty text: together they ask nothing of the output."""
    return all(re.search(p, "") is not None for p in patterns)


def _command_reasons(check: Check) -> list[str]:
    command = (check.command or "").strip()
    expect = check.expect
    if not command:
        return ["the command is empty"]
    parts = _parts(command)
    if all(p in _NOOPS for p in parts):
        return [f"the command does nothing ({command!r})"]
    if all(_PRINT_ONLY.match(p) for p in parts):
        return [f"the command only prints text it was given ({command!r}): its output "
                "says nothing about the nodes"]
    output_free = _any_text(expect.stdout_regex) and not expect.stdout_not_regex
    reasons = []
    if output_free and expect.exit_status is None:
        reasons.append("it accepts any exit status and asks nothing of the output")
    elif output_free and expect.exit_status == 0 and _FORCED.search(command):
        reasons.append(f"its exit status is forced to 0 ({command!r}) and nothing is "
                       "asked of its output")
    return reasons


def _host_reasons(check: Check, image_packages: Iterable[str]) -> list[str]:
    host = check.host
    if isinstance(host, ServiceRunning) and host.service in _BASE_SERVICES:
        return [f"every fresh node runs {host.service}"]
    if isinstance(host, PortListening) and host.port == 22 and host.proto == "tcp":
        return ["sshd listens on port 22 on every fresh node"]
    if isinstance(host, PackageInstalled) and host.package in set(image_packages):
        return [f"package {host.package} is in the node's image already"]
    if isinstance(host, FileContains) and re.search(host.pattern, "") is not None:
        return [f"the pattern /{host.pattern}/ matches any file: only the file's existence "
                "is tested"]
    return []


def trivial_reasons(check: Check, image_packages: Iterable[str] = ()) -> list[str]:
    """Why ``check`` passes whatever the nodes hold (empty: it does not, as far as a
    rule can tell). ``image_packages``: the packages of the image of its node."""
    if check.host is not None:
        return _host_reasons(check, image_packages)
    return _command_reasons(check)
