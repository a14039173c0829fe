"""The supervisor process, for real but without VMs: its own network and mount namespaces,
the apt proxy port inside, isolation between two of them, and death with its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from antrieb import config
from antrieb.errors import SupervisorError
from antrieb.vm.net import plan as netplan
from antrieb.vm.supervisor_client import SupervisorClient, wait_gone


def netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture
def supervisor():
    sup = SupervisorClient()
    yield sup
    sup.kill()


def test_lives_in_its_own_namespaces(supervisor):
    assert netns(supervisor.pid) != netns(os.getpid())
    assert os.readlink(f"/proc/{supervisor.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    runtime = str(config.cache_dir() / "runtime")
    theirs = Path(f"/proc/{supervisor.pid}/mounts").read_text()
    assert f"antrieb {runtime} tmpfs" in theirs
    assert f" {runtime} " not in Path("/proc/self/mounts").read_text()


def test_hands_out_sockets_inside_the_cluster_network(supervisor):
    sock = supervisor.connect(netplan.GATEWAY_IP, netplan.PROXY_PORT)
    try:
        assert sock.getpeername() == (netplan.GATEWAY_IP, netplan.PROXY_PORT)
    finally:
        sock.close()


def test_refused_connections_are_errors_not_hangs(supervisor):
    with pytest.raises(SupervisorError, match=rf"{netplan.GATEWAY_IP}:9\b"):
        supervisor.connect(netplan.GATEWAY_IP, 9, timeout=2)
    assert supervisor.request("stats")["ok"]  # still serving after the error


def test_two_supervisors_are_isolated():
    a, b = SupervisorClient(), SupervisorClient()
    try:
        assert netns(a.pid) != netns(b.pid)
    finally:
        a.kill()
        b.kill()


def test_unknown_request_is_an_error_reply(supervisor):
    reply = supervisor.request("fly")
    assert reply["ok"] is False and "fly" in reply["error"]


def test_orderly_shutdown(supervisor):
    pid = supervisor.pid
    supervisor.shutdown()
    assert wait_gone(pid, 5)


def test_dies_with_its_owner_even_on_kill_9(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import time
            from antrieb.vm.supervisor_client import SupervisorClient
            s = SupervisorClient()
            print(s.pid, flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        sup_pid = int(owner.stdout.readline())
        ns = netns(sup_pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert wait_gone(sup_pid, 5), "supervisor outlived its owner"
        t0 = time.monotonic()
        still = []
        while time.monotonic() - t0 < 5:
            still = [p for p in os.listdir("/proc") if p.isdigit() and _ns_of(p) == ns]
            if not still:
                break
            time.sleep(0.05)
        assert not still, f"processes left in the cluster's network namespace: {still}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()


def _ns_of(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
