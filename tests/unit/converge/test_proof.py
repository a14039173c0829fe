"""The proof's gates on the in-memory twin: a runtime-only setting fails the reboot gate
as ``not_persistent`` and goes back into the loop; residue is parsed and reported. The
same gates run on real VMs in tests/vm/test_proof.py."""

from __future__ import annotations

import json

from antrieb.converge import Converger, Task
from antrieb.converge.proof import SCAN, parse_scan

from ..llm.fakes import ScriptedProvider
from .fakes import FakeNode, World

TASK = {
    "name": "forwarding",
    "request": "node1 forwards IPv4 packets",
    "topology": {"nodes": [{"name": "node1", "role": "router"}]},
    "checks": [{"name": "ip forwarding on", "node": "node1",
                "command": "sysctl -n net.ipv4.ip_forward",
                "expect": {"stdout_regex": ["^1$"]}, "attempts": 1}],
}
RUNTIME = "#!/bin/bash\nsysctl -w net.ipv4.ip_forward=1\n"
PERSISTED = ("#!/bin/bash\necho net.ipv4.ip_forward=1 > /etc/sysctl.d/90-forward.conf\n"
             "sysctl --system\n")


class SysctlWorld(World):
    """A node with a kernel setting (lost at reboot) and files (kept)."""

    def on_up(self, cluster) -> None:
        cluster.facts = {}

    def on_reboot(self, cluster) -> None:
        for node in cluster.nodes:
            cluster.facts[node.name] = cluster.facts.get((node.name, "file"), "0")

    def script(self, node: FakeNode, role: str, text: str):
        facts = node.cluster.facts
        facts[node.name] = "1"
        if "sysctl.d" in text:
            facts[(node.name, "file")] = "1"
        return 0, "net.ipv4.ip_forward = 1\n", ""

    def command(self, node: FakeNode, command: str):
        if command == SCAN:
            return 0, "file\t/tmp/build\nfile\t/tmp/build/key\nprivate_key\t/tmp/build/key\n", ""
        if "sysctl -n net.ipv4.ip_forward" in command:
            return 0, node.cluster.facts.get(node.name, "0") + "\n", ""
        return 0, "", ""


def _synthesis(script: str) -> str:
    return json.dumps({"artifacts": {"tool": "shell", "scripts": {"router": script}},
                       "notes": ""})


def _retry(script: str) -> str:
    return json.dumps({"artifacts": {"tool": "shell", "scripts": {"router": script}},
                       "explanation": "persisted in /etc/sysctl.d"})


def test_a_runtime_only_setting_fails_the_reboot_gate_then_the_persisted_one_converges():
    llm = ScriptedProvider(_synthesis(RUNTIME), _retry(PERSISTED), _synthesis(PERSISTED))
    task = Task.model_validate({**TASK, "artifacts": {"tool": "shell",
                                                      "scripts": {"router": RUNTIME}}})
    world = SysctlWorld()
    result = Converger(task, provider=llm, cluster_factory=world.factory(),
                       record=False).run()
    assert result.status == "converged", result.reason
    phases = [(it.phase, it.passed) for it in result.iterations]
    assert phases == [("attempt", True), ("verify", False), ("attempt", True),
                      ("verify", True)]
    failed = result.iterations[1]
    assert failed.proof.idempotent is True and failed.proof.reboot == "failed"
    assert failed.diagnosis.failure_class == "not_persistent"
    assert failed.diagnosis.step == "ip forwarding on"
    assert "passed before every node rebooted" in failed.diagnosis.summary
    assert failed.recovery.path == "retry"
    retry_prompt = llm.calls[1][1][-1].content
    assert "Failure class: not_persistent" in retry_prompt
    assert "before the reboot: check 'ip forwarding on' on node1 passed" in retry_prompt
    proof = result.proof
    assert proof.fresh_server and proof.idempotent and proof.reboot == "passed"
    assert result.figures()["proof"]["reboot"] == "passed"
    # the folder counts once, the key readable by others on its own line
    assert [(r.kind, r.item) for r in proof.residue] == [
        ("file", "/tmp/build"), ("private_key", "/tmp/build/key")]
    assert "again after every node rebooted" in result.reason


def test_strict_tasks_fail_on_residue():
    task = Task.model_validate({**TASK, "strict": True,
                                "artifacts": {"tool": "shell", "scripts": {"router": PERSISTED}}})
    llm = ScriptedProvider(_synthesis(PERSISTED))
    result = Converger(task, provider=llm, cluster_factory=SysctlWorld().factory(),
                       record=False).run()
    verify = next(it for it in result.iterations if it.phase == "verify")
    assert verify.proof.reboot == "passed" and verify.proof.residue
    assert not verify.passed and verify.diagnosis.failure_class == "residue"
    assert "/tmp/build" in "\n".join(verify.diagnosis.evidence)


def test_parse_scan_keeps_wanted_packages_and_top_folders():
    out = ("file\t/tmp/a\nfile\t/tmp/a/b\nfile\t/root/.bash_history\n"
           "package\tnginx\npackage\tvim\npackage\tlibfoo1\n")
    found = parse_scan("web", out, "apt-get install -y nginx libfoo1-dev\n")
    assert [(r.kind, r.item) for r in found] == [
        ("file", "/tmp/a"), ("file", "/root/.bash_history"), ("package", "vim"),
        ("package", "libfoo1")]
