"""Finding the Debian mirror in a host's apt sources (pure parsing, table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from antrieb.errors import ConfigError
from antrieb.vm.net.mirror import debian_upstreams, parse_sources

DEB822_BOOKWORM = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main
"""

CASES = [
    pytest.param(
        [("debian.sources", DEB822_BOOKWORM)],
        {"debian": "http://mirror.example/debian",
         "debian-security": "http://mirror.example/debian-security"},
        id="deb822-with-comment-and-trailing-slash"),
    pytest.param(
        [("sources.list",
          "# deb http://commented.example/debian bookworm main\n"
          "deb http://one.example/debian trixie main contrib\n"
          "deb-src http://one.example/debian trixie main\n"
          "deb [signed-by=/k.gpg arch=amd64] https://sec.example/debian-security "
          "trixie-security main\n")],
        {"debian": "http://one.example/debian",
         "debian-security": "https://sec.example/debian-security"},
        id="one-line-with-options"),
    pytest.param(
        [("sources.list", "deb http://old.example/debian-security buster/updates main\n"
                          "deb http://old.example/debian buster main\n")],
        {"debian": "http://old.example/debian",
         "debian-security": "http://old.example/debian-security"},
        id="old-style-security-suite"),
    pytest.param(
        [("nodesource.sources", "Types: deb\nURIs: https://node.example/node_20.x\n"
                                "Suites: nodistro\nComponents: main\n"),
         ("ubuntu.list", "deb http://ubuntu.example/ubuntu jammy main\n"),
         ("debian.list", "deb http://mirror.example/debian stable main\n")],
        {"debian": "http://mirror.example/debian"},
        id="third-party-sources-ignored"),
    pytest.param(
        [("debian.sources", "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\n"
                            "Suites: bookworm\n\n"
                            "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n")],
        {"debian": "http://on.example/debian"},
        id="deb822-disabled-stanza"),
    pytest.param(
        [("debian.sources", "Types: deb-src\nURIs: http://src.example/debian\nSuites: sid\n\n"
                            "Types: deb\nURIs: file:/srv/mirror cdrom:[x]/\nSuites: sid\n")],
        {"debian": "http://src.example/debian"},
        id="deb-src-counts-file-uris-do-not"),
    pytest.param(
        [("a.sources", "Types: deb\nURIs:\n http://folded.example/debian\nSuites:\n  bookworm\n")],
        {"debian": "http://folded.example/debian"},
        id="deb822-folded-fields"),
    pytest.param(
        [("first.list", "deb http://first.example/debian bookworm main\n"),
         ("second.list", "deb http://second.example/debian bookworm main\n")],
        {"debian": "http://first.example/debian"},
        id="first-source-wins"),
    pytest.param([("empty.list", "# nothing\n\n")], {}, id="nothing"),
]


@pytest.mark.parametrize("files,expected", CASES)
def test_parse_sources(files, expected):
    assert parse_sources(files) == expected


def _host(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "etc/apt" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_reads_host_files_and_skips_disabled(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTRIEB_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("ANTRIEB_DEBIAN_SECURITY_MIRROR", raising=False)
    root = _host(tmp_path, {
        "sources.list.d/debian.sources": DEB822_BOOKWORM,
        "sources.list.d/other.list.disabled-by-admin":
            "deb http://no.example/debian bookworm main\n",
    })
    assert debian_upstreams(root)["debian"] == "http://mirror.example/debian"


def test_env_overrides(tmp_path, monkeypatch):
    root = _host(tmp_path, {"sources.list.d/debian.sources": DEB822_BOOKWORM})
    monkeypatch.setenv("ANTRIEB_DEBIAN_MIRROR", "http://override.example/debian/")
    monkeypatch.setenv("ANTRIEB_DEBIAN_SECURITY_MIRROR", "http://override.example/sec")
    assert debian_upstreams(root) == {"debian": "http://override.example/debian",
                                      "debian-security": "http://override.example/sec"}


def test_env_override_must_be_http(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_DEBIAN_MIRROR", "ftp://old.example/debian")
    with pytest.raises(ConfigError, match="ANTRIEB_DEBIAN_MIRROR"):
        debian_upstreams(tmp_path)


def test_no_mirror_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTRIEB_DEBIAN_MIRROR", raising=False)
    root = _host(tmp_path, {"sources.list": "deb http://ubuntu.example/ubuntu jammy main\n"})
    with pytest.raises(ConfigError, match="ANTRIEB_DEBIAN_MIRROR"):
        debian_upstreams(root)
