"""Which Debian mirror this host uses, read from its own apt sources.

antrieb never names a mirror itself: images point apt at a pseudo host
(:data:`antrieb.vm.net.plan.APT_PSEUDO_HOST`) and the apt proxy maps each archive
name to the mirror found here. That keeps images portable between hosts and lets
a site's own mirror or snapshot service be used without configuration.

Overrides: ``ANTRIEB_DEBIAN_MIRROR`` (main archive) and
``ANTRIEB_DEBIAN_SECURITY_MIRROR`` (security archive).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from antrieb.errors import ConfigError

MAIN = "debian"
SECURITY = "debian-security"

# Codenames and aliases that mark a source as the Debian main archive. A suite like
# "bookworm-updates" or "bookworm-backports" belongs to the main archive as well.
DEBIAN_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
})

_ENV = {MAIN: "ANTRIEB_DEBIAN_MIRROR", SECURITY: "ANTRIEB_DEBIAN_SECURITY_MIRROR"}


def _classify(suite: str) -> str | None:
    """The archive a suite belongs to, or None if it is not Debian's."""
    if suite.endswith("-security") or suite.endswith("/updates"):
        return SECURITY
    base = re.split(r"[-/]", suite, maxsplit=1)[0]
    return MAIN if base in DEBIAN_SUITES else None


def _usable_uri(uri: str) -> str | None:
    # Only plain HTTP(S) mirrors can be proxied; file:, cdrom:, mirror+... are skipped.
    uri = uri.strip()
    if not re.match(r"^https?://[^/\s]+", uri):
        return None
    return uri.rstrip("/")


def _one_line_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    """(uri, suites) of every enabled ``deb`` line of a classic sources.list."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # Options are one bracketed group: "deb [arch=amd64 signed-by=...] URI suite comp..."
        line = re.sub(r"\[[^\]]*\]", " ", line)
        parts = line.split()
        if len(parts) < 3 or parts[0] not in ("deb", "deb-src"):
            continue
        yield parts[1], [parts[2]]


def _deb822_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    """(uri, suites) of every enabled stanza of a deb822 ``.sources`` file."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t" and key:  # a folded continuation of the previous field
            current[key] += " " + raw.strip()
            continue
        if ":" in raw:
            name, value = raw.split(":", 1)
            key = name.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    for stanza in stanzas:
        if stanza.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        if not set(stanza.get("types", "").split()) & {"deb", "deb-src"}:
            continue
        suites = stanza.get("suites", "").split()
        for uri in stanza.get("uris", "").split():
            yield uri, suites


def parse_sources(files: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Map archive name to mirror URI from apt source files, given as (file name, text).

    The file name decides the format: ``*.sources`` is deb822, anything else is the
    one-line format. The first source wins for each archive. Pure: no I/O.
    """
    found: dict[str, str] = {}
    for name, text in files:
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for uri, suites in entries:
            usable = _usable_uri(uri)
            if usable is None:
                continue
            for suite in suites:
                archive = _classify(suite)
                if archive and archive not in found:
                    found[archive] = usable
    return found


def _source_files(root: Path) -> list[tuple[str, str]]:
    apt = root / "etc" / "apt"
    paths = [apt / "sources.list"]
    listdir = apt / "sources.list.d"
    if listdir.is_dir():
        # apt reads only these suffixes; "foo.list.disabled" and the like are ignored.
        paths += sorted(p for p in listdir.iterdir() if p.suffix in (".list", ".sources"))
    files = []
    for path in paths:
        try:
            files.append((path.name, path.read_text(errors="replace")))
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
    return files


def debian_upstreams(root: Path = Path("/")) -> dict[str, str]:
    """Archive name (``debian``, ``debian-security``) to upstream base URL.

    Read from the host's apt sources under ``root`` (for tests), overridden by
    ``ANTRIEB_DEBIAN_MIRROR`` / ``ANTRIEB_DEBIAN_SECURITY_MIRROR``. Raises
    :class:`ConfigError` when no Debian main archive is configured anywhere; the
    security archive is optional (images then go without security updates).
    """
    found = parse_sources(_source_files(root))
    for archive, var in _ENV.items():
        value = os.environ.get(var, "").strip()
        if value:
            usable = _usable_uri(value)
            if usable is None:
                raise ConfigError(f"{var}={value!r} is not an http(s):// URL")
            found[archive] = usable
    if MAIN not in found:
        raise ConfigError(
            "no Debian mirror found in this host's apt sources "
            f"({root / 'etc/apt/sources.list'}, {root / 'etc/apt/sources.list.d'}/); "
            f"set {_ENV[MAIN]}=http://<your mirror>/debian (and {_ENV[SECURITY]})"
        )
    return found
