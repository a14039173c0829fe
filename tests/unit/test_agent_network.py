"""The agent's in-process network set-up, against the real kernel in a throw-away
network namespace (a tap stands in for the VM's virtio NIC)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from antrieb import config

AGENT = config.REPO_ROOT / "antrieb" / "vm" / "guest" / "agent.py"
SCRIPT = f"""
import importlib.util, subprocess
spec = importlib.util.spec_from_file_location("agent", {str(AGENT)!r})
agent = importlib.util.module_from_spec(spec); spec.loader.exec_module(agent)
subprocess.run(["ip", "tuntap", "add", "eth0", "mode", "tap"], check=True)
golden = {{"dev": "eth0", "mac": "52:54:00:77:00:0a", "ip": "10.77.0.10", "prefix": 24,
          "gateway": "10.77.0.1"}}
agent.configure_network(golden)
agent.configure_network({{**golden, "mac": "52:54:00:77:00:0b", "ip": "10.77.0.11"}})
print(subprocess.run(["ip", "-o", "addr", "show", "eth0"], capture_output=True, text=True).stdout)
print(subprocess.run(["ip", "-o", "link", "show", "eth0"], capture_output=True, text=True).stdout)
print(subprocess.run(["ip", "route"], capture_output=True, text=True).stdout)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_clone_replaces_golden_address_mac_and_route():
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", SCRIPT],
                         capture_output=True, text=True, check=True).stdout
    assert "inet 10.77.0.11/24 brd 10.77.0.255" in out
    assert "10.77.0.10" not in out
    assert "52:54:00:77:00:0b" in out
    assert "default via 10.77.0.1 dev eth0" in out
