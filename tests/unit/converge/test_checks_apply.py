"""Checks (testinfra through our backend, on a node twin that runs on this machine) and
the pieces of applying artifacts that need no VM."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from antrieb.converge import apply
from antrieb.converge.checks import evaluate, run_check, run_checks
from antrieb.converge.checks import testinfra_host as host_of
from antrieb.converge.models import Check, Topology
from antrieb.ssh import Result


class LocalNode:
    """A node twin whose commands run here, with bash, like Node.run does in a VM."""

    name = "local"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command, timeout=600.0, *, check=False, output_cap=None):
        self.commands.append(command)
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                           timeout=timeout)
        return Result(node=self.name, command=command, exit_status=p.returncode,
                      stdout=p.stdout, stderr=p.stderr, seconds=time.monotonic() - t0)


def _check(**fields) -> Check:
    return Check.model_validate({"name": "c", "node": "local", "attempts": 1, **fields})


def test_testinfra_modules_run_through_our_backend(tmp_path):
    node = LocalNode()
    host = host_of(node)
    conf = tmp_path / "app.conf"
    conf.write_text("listen 8080;\n")
    assert host.file(str(conf)).contains("listen 8080")
    assert host.run("echo hi").stdout == "hi\n"
    assert any(str(conf) in c for c in node.commands)  # it really went through Node.run


def test_host_assertions_file_and_port(tmp_path):
    node = LocalNode()
    conf = tmp_path / "app.conf"
    conf.write_text("listen 8080;\n")
    ok = run_check(node, _check(host={"kind": "file_contains", "path": str(conf),
                                      "pattern": r"listen \d+;"}))
    assert ok.passed and ok.assertion == "file_contains"
    bad = run_check(node, _check(host={"kind": "file_contains", "path": str(conf),
                                       "pattern": "listen 80;"}))
    assert not bad.passed and "does not match" in bad.detail
    missing = run_check(node, _check(host={"kind": "file_contains", "path": "/nonexistent/x",
                                           "pattern": "x"}))
    assert not missing.passed and "does not exist" in missing.detail


@pytest.mark.skipif(not shutil.which("ss") and not shutil.which("netstat"),
                    reason="testinfra's socket module needs ss or netstat")
def test_port_listening_on_a_loopback_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        node = LocalNode()
        on_loopback = run_check(node, _check(host={"kind": "port_listening", "port": port}))
        assert on_loopback.passed, on_loopback.detail
        everywhere = run_check(node, _check(host={"kind": "port_listening", "port": port,
                                                  "address": "0.0.0.0"}))
        assert not everywhere.passed and "127.0.0.1" in everywhere.detail
    finally:
        server.close()


def test_command_checks_and_expectations():
    node = LocalNode()
    assert run_check(node, _check(command="echo hello from web1",
                                  expect={"stdout_regex": ["web1"]})).passed
    r = run_check(node, _check(command="echo x; exit 3"))
    assert not r.passed and "exited 3, expected 0" in r.detail
    c = _check(command="x", expect={"exit_status": None, "stdout_not_regex": ["error"]})
    assert evaluate(c, 5, "fine")[0]
    assert not evaluate(c, 0, "an error")[0]
    assert not evaluate(c, None, "")[0]


def test_a_check_is_retried_until_it_settles(tmp_path):
    node = LocalNode()
    flag = tmp_path / "up"
    cmd = f"if [ -e {flag} ]; then echo up; else touch {flag}; exit 1; fi"
    naps = []
    r = run_check(node, _check(command=cmd, attempts=3, interval_s=0.5), sleep=naps.append)
    assert r.passed and naps == [0.5]


def test_run_checks_stops_when_told():
    seen = []
    out = run_checks(lambda name: LocalNode(), [_check(command="true")] * 3,
                     on_result=seen.append, stopped=lambda: len(seen) >= 1)
    assert len(out) == 1


def test_install_seconds_are_cut_from_stderr():
    stderr, seconds = apply.split_install_seconds("warn\n\n@@antrieb-install-seconds 12.250\n")
    assert (stderr, seconds) == ("warn\n", 12.25)
    assert apply.split_install_seconds("plain") == ("plain", 0.0)


def test_the_timing_shim_and_wrapper_work_in_bash(tmp_path):
    # the shim as written to the guest, pointed at a fake apt-get and a local log
    log = tmp_path / "install.log"
    fake = tmp_path / "usr-bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\nsleep 0.2\necho installed $@\n")
    (fake / "apt-get").chmod(0o755)
    shim = apply._shim("apt-get").replace("/usr/bin/", f"{fake}/").replace(
        apply.INSTALL_LOG, str(log))
    (tmp_path / "apt-get").write_text(shim)
    (tmp_path / "apt-get").chmod(0o755)
    wrapped = apply._timed(f"{tmp_path}/apt-get install -y nginx; exit 4").replace(
        apply.INSTALL_LOG, str(log))
    p = subprocess.run(["bash", "-c", wrapped], capture_output=True, text=True)
    assert p.returncode == 4
    assert "installed install -y nginx" in p.stdout
    stderr, seconds = apply.split_install_seconds(p.stderr)
    assert 0.15 < seconds < 5 and stderr.strip() == ""


def test_ansible_recap_and_inventory():
    recap = apply.parse_recap(
        "PLAY RECAP *****\n"
        "m1                         : ok=4    changed=2    unreachable=0    failed=0    skipped=0\n"
        "m2                         : ok=4    changed=0    unreachable=0    failed=1\n")
    assert recap["m1"]["changed"] == 2 and recap["m2"]["failed"] == 1
    topo = Topology.model_validate({"nodes": [{"name": "ctl", "role": "control"},
                                              {"name": "m1", "role": "managed"},
                                              {"name": "m2", "role": "managed"}]})
    inv = apply.inventory_for(topo)
    assert "[managed]\nm1\nm2\n" in inv and "ansible_user=root" in inv


def test_critical_path_figures():
    from antrieb.converge.models import ShellArtifacts
    from antrieb.converge.results import StepResult

    topo = Topology.model_validate({"nodes": [{"name": "db", "role": "db"},
                                              {"name": "a1", "role": "app"},
                                              {"name": "a2", "role": "app"}]})
    arts = ShellArtifacts.model_validate({"scripts": {"db": "x", "app": "y"},
                                          "stages": [["db"], ["app"]]})
    steps = [StepResult(node="db", role="db", artifact="s", exit_status=0, seconds=10,
                        install_s=8),
             StepResult(node="a1", role="app", artifact="s", exit_status=0, seconds=5,
                        install_s=3),
             StepResult(node="a2", role="app", artifact="s", exit_status=0, seconds=7,
                        install_s=4)]
    assert apply.critical_seconds(steps, arts) == 17
    assert apply.critical_install_s(steps, topo, arts) == 12
