"""The proof's gates on real VMs: a setting applied only at run time passes its checks,
fails the reboot gate as ``not_persistent``, and the persisted version converges; a
private key left in /tmp is in the residue report. The model is a scripted stand-in
(not under test here); the VMs, the reboot and the scan are real."""

from __future__ import annotations

import json

import pytest

from antrieb.converge import Converger, Task
from tests.unit.llm.fakes import ScriptedProvider

pytestmark = pytest.mark.vm

KEY = ("ssh-keygen -q -t ed25519 -N '' -f /tmp/deploy_key <<< y >/dev/null; "
       "chmod 644 /tmp/deploy_key\n")
RUNTIME = "#!/bin/bash\nset -e\nsysctl -w net.ipv4.ip_forward=1\n" + KEY
PERSISTED = ("#!/bin/bash\nset -e\necho net.ipv4.ip_forward=1 > /etc/sysctl.d/90-forward.conf\n"
             "sysctl -p /etc/sysctl.d/90-forward.conf\n" + KEY)
TASK = {
    "name": "forwarding",
    "request": "node1 forwards IPv4 packets",
    "topology": {"nodes": [{"name": "node1", "role": "router"}]},
    "artifacts": {"tool": "shell", "scripts": {"router": RUNTIME}},
    "checks": [{"name": "ip forwarding on", "node": "node1",
                "command": "sysctl -n net.ipv4.ip_forward",
                "expect": {"stdout_regex": ["^1$"]}, "attempts": 1}],
}


def _answer(script: str, **extra: str) -> str:
    return json.dumps({"artifacts": {"tool": "shell", "scripts": {"router": script}},
                       **extra})


def test_runtime_only_setting_fails_the_reboot_gate_and_the_persisted_one_converges(
        debian12):
    llm = ScriptedProvider(_answer(RUNTIME, notes=""),
                           _answer(PERSISTED, explanation="persisted in /etc/sysctl.d"),
                           _answer(PERSISTED, notes=""))
    result = Converger(Task.model_validate(TASK), provider=llm, record=False).run()
    assert result.status == "converged", result.reason
    assert [(it.phase, it.passed) for it in result.iterations] == [
        ("attempt", True), ("verify", False), ("attempt", True), ("verify", True)]
    lost = result.iterations[1]
    assert lost.proof.idempotent and lost.proof.reboot == "failed"
    assert lost.diagnosis.failure_class == "not_persistent"
    assert lost.diagnosis.step == "ip forwarding on" and lost.recovery.path == "retry"
    assert [c.passed for c in lost.checks] == [True]
    assert [c.passed for c in lost.reboot_checks] == [False]
    proof = result.proof
    assert proof.fresh_server and proof.idempotent and proof.reboot == "passed"
    print(f"reboot gate, per node: {proof.reboot_s}; residue: {proof.residue}")
    left = {(r.kind, r.item) for r in proof.residue}
    assert ("file", "/tmp/deploy_key") in left and ("private_key", "/tmp/deploy_key") in left
    assert ("file", "/tmp/deploy_key.pub") in left
