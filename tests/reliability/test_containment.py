"""LLM-written code stays inside the VMs.

- Code the model writes, run through the converge path, that writes to host paths and
  scans the network: the host paths stay untouched, and the scan reaches only the
  cluster's own nodes (sshd) and the package proxy on the gateway.
- A step that prints without end is cut at its timeout and its output capped.
- A VM that fills its disk or exhausts its memory fails only itself: another cluster
  running at the same time goes on unharmed.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

from antrieb.converge import Budgets, Converger, Task
from antrieb.llm import OpenAIProvider
from antrieb.vm.net import plan as netplan

from .harness import MODEL, ModelServer, completion, purpose_of

PORTS = (22, 80, 443, 3142, 8080)


def host_ipv4() -> list[str]:
    """This host's own IPv4 addresses (what a VM that escaped could reach first)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return sorted({m.group(1) for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out)}
                  - {"127.0.0.1"})


def hostile_script(canary: str, host_file: str, targets: list[str]) -> str:
    return f"""set -u
echo owned > /tmp/{canary}
mkdir -p $(dirname {host_file}) && echo owned > {host_file}
: > /srv/scan
for ip in {' '.join(targets)}; do for port in {' '.join(map(str, PORTS))}; do
  ( if timeout 3 bash -c "echo > /dev/tcp/$ip/$port" 2>/dev/null; then r=OPEN; else r=SHUT; fi
    echo "$r $ip:$port" >> /srv/scan ) &
done; done
wait
"""


def test_llm_code_touches_nothing_of_the_host_and_reaches_only_its_cluster(debian12,
                                                                           tmp_path):
    canary = f"antrieb-canary-{secrets.token_hex(4)}"
    host_file = tmp_path / "host-owned.txt"
    host_file.write_text("the host's own\n")
    cluster_net = [str(netplan.SUBNET.network_address + i) for i in range(1, 17)]
    targets = cluster_net + host_ipv4() + ["192.0.2.1"]
    script = hostile_script(canary, str(host_file), targets)
    check = {"name": "scanned", "node": "node1", "attempts": 1, "timeout_s": 60,
             "command": "wc -l < /srv/scan; grep OPEN /srv/scan | sort || true",
             "expect": {"stdout_regex": [f"^{len(targets) * len(PORTS)}$"]}}
    design = {"topology": {"nodes": [{"name": "node1", "role": "app"},
                                     {"name": "node2", "role": "peer"}]},
              "artifacts": {"tool": "shell", "scripts": {"app": script, "peer": "true"}},
              "checks": [check]}

    def model(body: dict) -> tuple[int, dict]:
        if purpose_of(body) == "synthesize":
            return 200, completion(json.dumps({"artifacts": design["artifacts"]}))
        return 200, completion(json.dumps(design))

    with ModelServer(model, delay=0.0) as server:
        task = Task.model_validate({"name": "hostile", "request": "scan and scribble",
                                    "max_nodes": 2})
        provider = OpenAIProvider(model=MODEL, base_url=server.base_url, api_key="sk-x")
        result = Converger(task, provider=provider,
                           budgets=Budgets(max_iterations=2)).run()
    first = result.iterations[0]
    assert first.steps and all(s.ok for s in first.steps), first.steps
    out = first.checks[0].stdout
    assert first.checks[0].passed, (first.checks[0].detail, out)  # every probe was made
    opened = set(re.findall(r"^OPEN (\S+)$", out, re.M))
    nodes = {netplan.node_ip(0), netplan.node_ip(1)}
    allowed = {f"{ip}:22" for ip in nodes} | {f"{netplan.GATEWAY_IP}:{netplan.PROXY_PORT}"}
    print(f"scan from node1: {len(targets) * len(PORTS)} probes, open: {sorted(opened)}")
    assert opened <= allowed, f"reached beyond the cluster: {sorted(opened - allowed)}"
    assert opened == allowed, f"the scan itself is broken: open {sorted(opened)}"
    assert result.status == "converged", result.reason
    # the host is untouched
    assert not (Path("/tmp") / canary).exists()
    assert host_file.read_text() == "the host's own\n"


def test_output_without_end_is_cut_and_capped_through_the_converge_path(debian12):
    task = Task.model_validate({
        "name": "flood", "request": "print forever", "max_nodes": 1,
        "topology": {"nodes": [{"name": "node1", "role": "app"}]},
        "artifacts": {"tool": "shell", "scripts": {"app": "yes antrieb-flood"}},
        "checks": [{"name": "never", "node": "node1", "command": "true", "attempts": 1}]})
    with ModelServer(delay=0.0) as server:
        provider = OpenAIProvider(model=MODEL, base_url=server.base_url, api_key="sk-x")
        t0 = time.monotonic()
        result = Converger(task, provider=provider,
                           budgets=Budgets(max_iterations=1, step_timeout_s=15)).run()
        took = time.monotonic() - t0
    step = result.iterations[0].steps[0]
    dropped = int(re.search(r"antrieb dropped (\d+) bytes", step.stdout).group(1))
    print(f"flood: cut after {step.seconds:.1f}s, {dropped / 2**20:.0f} MiB dropped, "
          f"{len(step.stdout)} chars kept, run {took:.0f}s")
    assert step.timed_out and step.exit_status is None
    assert len(step.stdout) < (1 << 20) + 200 and dropped > 0
    assert result.status == "budget_exhausted" and result.iterations[0].diagnosis is not None
    assert result.iterations[0].diagnosis.failure_class == "timeout"


def test_a_vm_that_fills_its_disk_or_memory_fails_only_itself(cluster_factory):
    victim = cluster_factory(nodes=1)
    bystander = cluster_factory(nodes=1)
    stop = threading.Event()
    beats: list[bool] = []

    def heartbeat() -> None:
        while not stop.is_set():
            r = bystander["node1"].run("echo beat > /srv/beat && sha256sum /srv/beat",
                                       timeout=60)
            beats.append(r.ok)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        # the disk: every free block allocated, root's reserve included (no data written:
        # the overlay on the host stays small)
        disk = victim["node1"].run(
            "fallocate -l $(( $(stat -f -c '%f * %S' /) - 65536 )) /fill; "
            "head -c 4M /dev/zero > /srv/more", timeout=120)
        assert not disk.ok and "No space left" in disk.stderr, disk
        # the memory: grab until the guest's OOM killer ends it
        mem = victim["node1"].run(
            "python3 -c 'a = []\nwhile True: a.append(bytearray(16 << 20))'; echo rc=$?",
            timeout=180)
        assert "rc=137" in mem.stdout or "Killed" in mem.stderr + mem.stdout, mem
        assert victim["node1"].run("echo alive", timeout=60).stdout.strip() == "alive"
    finally:
        stop.set()
        thread.join(120)
    assert beats and all(beats), beats
    assert bystander["node1"].run("rm /srv/beat && echo fine").stdout.strip() == "fine"
