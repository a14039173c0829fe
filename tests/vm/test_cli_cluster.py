"""`antrieb cluster up` on real VMs: nodes listed, commands from stdin run on the nodes,
everything torn down at end of input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from antrieb.bench_soak import descendants

from .conftest import qemu_pids


def qemu_pids_under(root: int) -> set[int]:
    """antrieb's QEMU processes descending from ``root``: other work on the machine may
    run VMs of its own at the same time."""
    return qemu_pids() & set(descendants(root))


def test_cluster_up_runs_stdin_commands_and_tears_down(debian12):
    exe = Path(sys.executable).parent / "antrieb"
    proc = subprocess.Popen([str(exe), "cluster", "up", "--nodes", "2", "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        header = json.loads(proc.stdout.readline())  # printed once the cluster is up
        assert [n["name"] for n in header["nodes"]] == ["node1", "node2"]
        assert all(n["ip"] for n in header["nodes"])
        ours = qemu_pids_under(proc.pid)
        assert len(ours) == 2
        out, err = proc.communicate(
            "all hostname\nnode1 ssh -o BatchMode=yes node2 cat /etc/hostname\n"
            "node9 true\nnode2 false\n", timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = [json.loads(line) for line in out.splitlines()]
    by = [(r["node"], r["exit_status"], r["stdout"].strip()) for r in results]
    assert by == [("node1", 0, "node1"), ("node2", 0, "node2"), ("node1", 0, "node2"),
                  ("node2", 1, "")]
    assert "NODE one of node1, node2" in err  # node9 refused, the rest went on
    assert proc.returncode == 1  # two lines failed: node9 unknown, 'false' exited 1
    deadline = time.monotonic() + 10
    while qemu_pids() & ours:  # torn down at end of input
        assert time.monotonic() < deadline
        time.sleep(0.05)
