"""Package layers on real VMs: an attempt after one that installed nginx starts from a
layer with nginx installed (the script's install is a no-op there), and the proof starts
from the pristine golden again. The model is a stand-in answering by purpose (not under
test here); the VMs, apt, the layer and its save are real."""

from __future__ import annotations

import json

import pytest

from antrieb import events
from antrieb.converge import Converger, Task, layers
from antrieb.llm.base import Completion, Usage
from antrieb.vm import saved

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

SCRIPT = """#!/bin/bash
set -e
echo "before: $(dpkg-query -W -f='${{Status}}' nginx 2>/dev/null || echo absent)"
apt-get update -q
apt-get install -y -q nginx
printf 'server {{ listen 8080 {semi} location / {{ return 200 "layered\\\\n"; }} }}\\n' \\
  > /etc/nginx/conf.d/site.conf
nginx -t
systemctl reload nginx
"""
BROKEN, FIXED = SCRIPT.format(semi=""), SCRIPT.format(semi=";")
TASK = {
    "name": "layered-nginx",
    "request": "nginx on web1 answers 'layered' on port 8080",
    "topology": {"nodes": [{"name": "web1", "role": "web"}]},
    "artifacts": {"tool": "shell", "scripts": {"web": BROKEN}},
    "checks": [{"name": "answers on 8080", "node": "web1",
                "command": "curl -s localhost:8080/", "expect": {"stdout_regex": ["layered"]}}],
}


class ByPurpose:
    """Answers each kind of request with its fixed answer; anything else is a failure."""

    name, model = "by-purpose", "by-purpose-1"

    def __init__(self, **answers: dict) -> None:
        self.answers = answers

    def complete(self, messages, *, purpose: str) -> Completion:
        if purpose not in self.answers:
            raise AssertionError(f"unexpected request {purpose!r}")
        return Completion(text=json.dumps(self.answers[purpose]), model=self.model,
                          seconds=0.1, usage=Usage(prompt_tokens=10, completion_tokens=5))


def test_second_attempt_starts_from_a_layer_and_the_proof_from_pristine(debian12):
    # cold: the first attempt must start pristine and make the layer alongside
    saved.remove(layers.layer_name("debian-12", {"nginx"}))
    shell = lambda script: {"tool": "shell", "scripts": {"web": script}}  # noqa: E731
    llm = ByPurpose(design={"artifacts": shell(BROKEN), "notes": ""},
                    retry={"artifacts": shell(FIXED), "explanation": "missing ';'"},
                    synthesize={"artifacts": shell(FIXED), "notes": ""})
    chosen: list[events.LayerChosen] = []
    with events.subscribed(lambda e: isinstance(e, events.LayerChosen) and chosen.append(e)):
        result = Converger(Task.model_validate(TASK), provider=llm, record=False,
                           layers=True).run()
    assert result.status == "converged", (result.reason, result.findings)
    assert [(it.phase, it.passed) for it in result.iterations] == [
        ("attempt", False), ("attempt", True), ("verify", True)]
    first, second, proof = result.iterations
    print("\nlayers:", [(e.iteration, e.outcome, e.packages, e.build_s, e.reason)
                        for e in chosen])
    print("install_s per iteration:", [round(it.timings.get("install_s", 0), 1)
                                       for it in result.iterations],
          "saved:", second.timings.get("install_saved_s"))
    by_iteration = {e.iteration: e for e in chosen}
    assert by_iteration[1].outcome == "pristine" and "alongside" in by_iteration[1].reason
    assert by_iteration[2].outcome == "built" and by_iteration[2].packages == ["nginx"]
    assert 3 not in by_iteration  # the proof never asks for a layer
    assert second.timings["layer_hits"] == 1
    # the layered attempt found nginx installed; apt had nothing to do
    out = second.steps[0].stdout
    assert "before: install ok installed" in out, out
    assert "nginx is already the newest version" in out, out
    # the proof's node is pristine: nginx absent before its script ran
    assert "before: absent" in proof.steps[0].stdout, proof.steps[0].stdout
    assert "newly installed" in proof.steps[0].stdout
    assert "before: absent" in first.steps[0].stdout
