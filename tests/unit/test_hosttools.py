"""The host-tool registry holds against ./dev's package list and against the code.

A tool the code runs but the registry does not name, or a registry package ./dev does
not install, is what let a fresh machine fail with "depmod is missing" while CI passed.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from antrieb import hosttools
from antrieb.errors import MissingToolError

REPO = Path(__file__).resolve().parents[2]
for _ in range(3):  # tests/unit may gain subfolders: walk up to the checkout
    if (REPO / "dev").exists():
        break
    REPO = REPO.parent

# Calls whose first argument is an argv list, and calls that look a program up by name.
ARGV_CALLS = {"run", "Popen", "check_output", "check_call", "call", "_version"}
LOOKUPS = {("shutil", "which"), ("hosttools", "require"), ("hosttools", "find"),
           ("hosttools", "get")}


def dev_packages() -> set[str]:
    out = subprocess.run([str(REPO / "dev"), "packages"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return set(out.split())


def _program(node: ast.expr) -> str | None:
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value.rsplit("/", 1)[-1]
    return None


def programs_called(path: Path) -> set[tuple[str, int]]:
    """(program, line) of every host command written out literally in ``path``."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            arg = node.args[0]
            if name in ARGV_CALLS and (prog := _program(arg)):
                found.add((prog, node.lineno))
            if ((owner, name) in LOOKUPS and isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)):
                found.add((arg.value, node.lineno))
        # for argv in (["dmesg"], ["journalctl", ...]): subprocess.run(argv)
        if (isinstance(node, ast.For) and isinstance(node.iter, (ast.Tuple, ast.List))
                and getattr(node.target, "id", "") in ("argv", "cmd", "command")):
            for elt in node.iter.elts:
                if prog := _program(elt):
                    found.add((prog, node.lineno))
    return found


def _runs_in_guest(path: Path) -> bool:
    # The guest agent is copied into images and runs there; its commands are the guest's.
    return "guest" in path.parts and path.name == "agent.py"


def _sources() -> list[Path]:
    files = sorted((REPO / "antrieb").rglob("*.py")) + sorted((REPO / "tests").rglob("*.py"))
    return [p for p in files if not _runs_in_guest(p) and p != Path(__file__).resolve()]


def test_every_required_package_is_in_dev():
    listed = dev_packages()
    assert "kmod" in listed or "kmod" not in {t.package for t in hosttools.TOOLS.values()}
    gaps = {f"{t.name}: {p}" for t in hosttools.TOOLS.values() if not (t.base or t.optional)
            for p in t.packages if p not in listed}
    assert not gaps, f"./dev's APT_PACKAGES lacks what the registry needs: {sorted(gaps)}"


def test_every_host_command_in_the_code_is_registered():
    unknown = []
    for path in _sources():
        for prog, line in programs_called(path):
            if prog not in hosttools.TOOLS and prog not in ("sys.executable",):
                unknown.append(f"{path.relative_to(REPO)}:{line}: {prog}")
    assert not unknown, ("host commands not in antrieb.hosttools.TOOLS (add each with its "
                         f"Debian package, and the package to ./dev): {sorted(unknown)}")


def test_the_scan_sees_the_calls_it_must_see():
    # A scan that finds nothing passes trivially: prove it finds known calls.
    seen = {prog for path in _sources() for prog, _ in programs_called(path)}
    assert {"depmod", "mkfs.ext4", "qemu-img", "ip", "gcc", "nsenter", "dmesg"} <= seen
    assert any(_runs_in_guest(p) for p in (REPO / "antrieb").rglob("*.py"))


def test_require_names_the_package(monkeypatch):
    monkeypatch.setattr(hosttools.shutil, "which", lambda *a, **k: None)
    with pytest.raises(MissingToolError, match="depmod is missing: apt-get install kmod"):
        hosttools.require("depmod")
    with pytest.raises(KeyError, match=r"not in antrieb\.hosttools\.TOOLS"):
        hosttools.require("no-such-tool")
    assert hosttools.get("gcc").hint == "apt-get install gcc libc6-dev"


def test_missing_skips_optional_tools_unless_asked(monkeypatch):
    monkeypatch.setattr(hosttools, "find", lambda name: None)
    required = {t.name for t in hosttools.missing()}
    assert "zstd" not in required and "depmod" in required
    assert "zstd" in {t.name for t in hosttools.missing(optional=True)}
    assert {t.scope for t in hosttools.missing("engine")} == {"engine"}


def test_doctor_reports_a_missing_tool_and_its_package(monkeypatch):
    from antrieb import doctor

    real = hosttools.find
    monkeypatch.setattr(hosttools, "find", lambda n: None if n == "depmod" else real(n))
    monkeypatch.setattr(doctor, "_accel", lambda: {"name": "tcg", "reason": "test"})
    rep = doctor.report()
    assert rep["missing"].get("depmod") == "kmod"
    assert any("kmod" in h for h in rep["hints"])
    assert rep["ok"] is False


def test_check_exits_non_zero_naming_tool_and_package(monkeypatch, capsys):
    monkeypatch.setattr(hosttools, "find", lambda n: None if n == "depmod" else "/bin/" + n)
    assert hosttools.main(["check"]) == 1
    assert "MISSING depmod (engine): apt-get install kmod" in capsys.readouterr().err
    monkeypatch.setattr(hosttools, "find", lambda n: "/bin/" + n)
    assert hosttools.main(["check"]) == 0
