"""The verification's logic on the in-memory cluster twin: the order of the three
trials, what refuses, passes and fails a task, and the record it leaves.
tests/vm/test_tasks_verify.py runs the same code on real VMs."""

from __future__ import annotations

import pytest

from antrieb.errors import VMError
from antrieb.tasks import CatalogueTask, last_verification, verifications, verify_task

from ..converge.fakes import FakeCluster, FakeNode, World


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _no_settle_time(monkeypatch):
    from antrieb.converge import checks

    monkeypatch.setattr(checks, "_sleep", lambda seconds: None)


class StateWorld(World):
    """A script writes the state its text names: 'state=good' (kept on disk), 'runtime=good'
    (lost on reboot), 'exit=1' fails the script. `cat /srv/state` reads it back."""

    def on_up(self, cluster: FakeCluster) -> None:
        cluster.facts = {"disk": {}, "runtime": {}}  # type: ignore[attr-defined]

    def on_reboot(self, cluster: FakeCluster) -> None:
        cluster.facts["runtime"] = {}  # type: ignore[attr-defined]

    def script(self, node: FakeNode, role: str, text: str):
        facts = node.cluster.facts  # type: ignore[attr-defined]
        if "exit=1" in text:
            return 1, "", "E: Unable to locate package nginx-full-of-typos"
        if "once" in text and facts["disk"].get(node.name):
            return 1, "", "useradd: user 'hello' already exists"
        for kind in ("disk", "runtime"):
            for word in text.split():
                if word.startswith(("state=", "runtime=")) and word.split("=")[0] == (
                        "state" if kind == "disk" else "runtime"):
                    facts[kind][node.name] = word.split("=", 1)[1]
        return 0, "ok", ""

    def command(self, node: FakeNode, command: str):
        facts = node.cluster.facts  # type: ignore[attr-defined]
        if command == "cat /srv/state":
            value = facts["runtime"].get(node.name) or facts["disk"].get(node.name)
            return (0, value + "\n", "") if value else (1, "", "No such file or directory")
        if command == "test -d /etc && echo good":
            return 0, "good\n", ""
        return 0, "", ""


def _spec(reference: str = "state=good", near_miss: str = "state=bad",
          command: str = "cat /srv/state") -> CatalogueTask:
    def shell(words: str) -> dict:
        return {"tool": "shell", "scripts": {"web": f"#!/bin/bash\n: {words}\n"}}

    return CatalogueTask.model_validate({
        "name": "state", "title": "a state file", "category": "single-host service",
        "task": {"name": "state", "request": "a state file saying good",
                 "topology": {"nodes": [{"name": "web", "role": "web"}]},
                 "checks": [{"name": "the state is good", "node": "web", "command": command,
                             "expect": {"stdout_regex": ["^good$"]}}]},
        "reference": shell(reference), "near_miss": shell(near_miss),
        "near_miss_why": "it writes the wrong state into the file"})


def test_a_good_task_passes_and_is_recorded():
    world = StateWorld()
    v = verify_task(_spec(), factory=world.factory())
    assert v.result == "passed", v.reason
    assert [t.artifacts for t in (v.untouched, v.reference, v.near_miss)] == [
        "none", "reference", "near_miss"]
    assert len(world.clusters) == 3 and all(c.state == "down" for c in world.clusters)
    assert not v.untouched.passed and v.untouched.failed_at == "checks"
    assert v.reference.passed and v.reference.failed_at is None
    assert [s.artifact for s in v.reference.steps] == ["script:web", "script:web"]  # + again
    assert getattr(world.clusters[1], "reboots", 0) == 1  # the proof's reboot
    assert v.near_miss.failed_at == "checks"
    assert v.near_miss.failed_checks() == ["the state is good on web"]
    assert "the near miss fails at the state is good on web" in v.reason
    assert v.wall_s >= 0 and v.verified_at
    assert last_verification("state") == v and verifications("state") == [v]
    brief = v.brief()
    assert brief["result"] == "passed" and brief["near_miss_failed_at"] == "checks"
    assert brief["untouched_passed"] == 0 and brief["reference"] is True


def test_checks_that_pass_on_untouched_nodes_refuse_the_task_at_once():
    world = StateWorld()
    v = verify_task(_spec(command="test -d /etc && echo good"), factory=world.factory())
    assert v.result == "refused" and "every check passes on untouched nodes" in v.reason
    assert len(world.clusters) == 1 and v.reference is None


def test_the_static_rule_refuses_without_a_cluster():
    world = StateWorld()
    spec = _spec()
    spec.task.checks[0].command = "true"  # as a task file of one's own could say
    v = verify_task(spec, factory=world.factory())
    assert v.result == "refused" and "does nothing" in v.reason and world.clusters == []


def test_a_reference_that_fails_fails_the_task():
    v = verify_task(_spec(reference="state=wrong"), factory=StateWorld().factory())
    assert v.result == "failed" and v.near_miss is None
    assert v.reason == "the reference fails at checks: the state is good on web"


def test_a_reference_that_only_holds_until_the_reboot_fails_the_proof():
    world = StateWorld()
    v = verify_task(_spec(reference="runtime=good"), factory=world.factory())
    assert v.result == "failed" and v.reference.failed_at == "reboot"
    v = verify_task(_spec(reference="runtime=good"), factory=world.factory(), proof=False)
    assert v.result == "passed" and not v.proof


def test_a_near_miss_that_passes_fails_the_task():
    v = verify_task(_spec(near_miss="state=good extra"), factory=StateWorld().factory())
    assert v.result == "failed"
    assert v.reason == "the near miss passes every check: the checks do not catch it"


def test_a_near_miss_caught_only_by_the_reboot_counts_with_the_proof():
    v = verify_task(_spec(near_miss="runtime=good"), factory=StateWorld().factory())
    assert v.result == "passed" and v.near_miss.failed_at == "reboot"
    assert v.reason.endswith("the near miss fails after the reboot")
    v = verify_task(_spec(near_miss="runtime=good"), factory=StateWorld().factory(),
                    proof=False)
    assert v.result == "failed"  # without the proof nothing catches it


def test_a_near_miss_whose_apply_fails_is_caught_in_the_apply():
    v = verify_task(_spec(near_miss="exit=1"), factory=StateWorld().factory())
    assert v.result == "passed" and v.near_miss.failed_at == "apply"
    assert "Unable to locate package" in v.near_miss.steps[0].output_tail


def test_a_cluster_that_cannot_start_is_an_error_not_a_verdict():
    class Broken(StateWorld):
        def on_up(self, cluster):
            raise VMError("web", "boot timed out")

    v = verify_task(_spec(), factory=Broken().factory(), record=False)
    assert v.result == "error" and "boot timed out" in v.reason
    assert last_verification("state") is None  # record=False


def test_a_reference_that_fails_when_applied_again_fails_at_idempotence():
    v = verify_task(_spec(reference="state=good once"), factory=StateWorld().factory())
    assert v.result == "failed" and v.reference.failed_at == "idempotence"
    assert v.reason == "the reference fails at idempotence: script:web on web (exit 1)"
