"""The C guest agent (agentd.c), compiled here and run against the real kernel in
throw-away namespaces: network, hostname and /run are private to the test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from antrieb import config

SOURCE = config.REPO_ROOT / "antrieb" / "vm" / "guest" / "agentd.c"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")


@pytest.fixture(scope="module")
def agentd(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the guest agent: apt-get install gcc libc6-dev")
    binary = tmp_path_factory.mktemp("agentd") / "agentd"
    subprocess.run(["gcc", "-O2", "-static", "-Wall", "-Werror", "-o", str(binary),
                    str(SOURCE)], check=True)
    return binary


@pytest.fixture
def agent(agentd):
    ours, theirs = socket.socketpair()
    script = (f"mount -t tmpfs none /run && ip tuntap add eth0 mode tap && "
              f"exec {agentd} --fd {theirs.fileno()}")
    env = {**os.environ, "ANTRIEB_AGENT_PY": str(SOURCE.with_name("agent.py"))}
    proc = subprocess.Popen(["unshare", "--net", "--uts", "--mount", "sh", "-c", script],
                            pass_fds=[theirs.fileno()], env=env)
    theirs.close()
    reader = ours.makefile("rb")

    def call(request: dict | bytes) -> dict:
        data = request if isinstance(request, bytes) else json.dumps(request).encode()
        ours.sendall(data + b"\n")
        return json.loads(reader.readline())

    call.pid = proc.pid
    yield call
    proc.kill()
    proc.wait()
    reader.close()
    ours.close()


def identity(**over) -> dict:
    req = {"id": 2, "op": "identity", "hostname": "node1", "persist": False,
           "hosts": "127.0.0.1 localhost\n10.77.0.11 node1\n",
           "net": {"dev": "eth0", "mac": "52:54:00:77:00:0b", "ip": "10.77.0.11",
                   "prefix": 24, "gateway": "10.77.0.1"},
           "ssh": {"public": "ssh-ed25519 AAAA test", "private": "-----BEGIN\nk\"ey\\\n"},
           "entropy": "c2VlZA=="}
    req.update(over)
    return req


def in_ns(pid: int, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--target={pid}", "--net", "--uts", "--mount", *argv],
                          capture_output=True, text=True, check=True).stdout


def test_ping_and_bad_requests(agent):
    pong = agent({"id": 1, "op": "ping"})
    # the boot id tells a rebooted guest from the one asked to reboot
    assert pong == {"id": 1, "ok": True, "agent": "c", "boot_id": pong["boot_id"]}
    assert pong["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert agent(b"{not json")["ok"] is False
    assert agent(b'{"id": 5}')["ok"] is False


def test_identity_sets_network_name_and_files(agent):
    reply = agent(identity())
    assert reply["ok"] and len(reply["random"]) == 32
    addr = in_ns(agent.pid, "ip", "-o", "addr", "show", "eth0")
    assert "inet 10.77.0.11/24 brd 10.77.0.255" in addr
    assert "52:54:00:77:00:0b" in in_ns(agent.pid, "ip", "-o", "link", "show", "eth0")
    assert "default via 10.77.0.1 dev eth0" in in_ns(agent.pid, "ip", "route")
    assert in_ns(agent.pid, "hostname").strip() == "node1"
    assert in_ns(agent.pid, "cat", "/run/antrieb/hosts").endswith("10.77.0.11 node1\n")
    assert in_ns(agent.pid, "cat", "/run/antrieb/id_ed25519") == "-----BEGIN\nk\"ey\\\n"


def test_second_identity_replaces_the_first(agent):
    agent(identity())
    second = identity(hostname="node2", net={**identity()["net"], "ip": "10.77.0.12",
                                               "mac": "52:54:00:77:00:0c"})
    assert agent(second)["ok"]
    addr = in_ns(agent.pid, "ip", "-o", "-4", "addr", "show", "eth0")
    assert "10.77.0.12/24" in addr and "10.77.0.11" not in addr


def test_bad_network_settings_are_an_error_reply(agent):
    reply = agent(identity(net={"dev": "eth0", "mac": "nope", "ip": "10.77.0.11",
                                "prefix": 24, "gateway": "10.77.0.1"}))
    assert reply["ok"] is False and "mac" in reply["error"]
    assert agent({"id": 9, "op": "ping"})["ok"]  # still serving


def test_other_requests_go_to_the_python_agent(agent):
    reply = agent({"id": 3, "op": "exec", "cmd": "echo out; echo err >&2; exit 4"})
    assert reply == {"id": 3, "ok": True, "rc": 4, "out": "out\n", "err": "err\n"}
    assert agent({"id": 4, "op": "no-such-op"}) == {
        "id": 4, "ok": False, "error": "KeyError: 'no-such-op'"}
