"""The convergence loop on an in-memory cluster twin: paths, budgets, stop, replay, LLM
failures. The same loop runs on real VMs in tests/vm/test_converge.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from antrieb import events
from antrieb.converge import Budgets, Converger, Task
from antrieb.converge import checks as checks_mod
from antrieb.converge.record import list_runs, load_events, load_run
from antrieb.converge.runs import replay_run, same_outcome
from antrieb.errors import LLMUnavailable
from antrieb.examples import load_example
from antrieb.llm import Recording
from tests.timebounds import within

from ..llm.fakes import ScriptedProvider
from .fakes import FakeNode, LoadBalancerWorld, World, host_assertions_pass

SCRIPT_TASK = {
    "name": "hello",
    "request": "a file /srv/hello saying hi",
    "topology": {"nodes": [{"name": "node1", "role": "app"}]},
    "checks": [{"name": "hello", "node": "node1", "command": "cat /srv/hello",
                "expect": {"stdout_regex": ["hi"]}, "attempts": 1}],
}


def _artifacts(script: str = "echo hi > /srv/hello") -> dict:
    return {"tool": "shell", "scripts": {"app": script}}


@pytest.fixture
def fake_testinfra(monkeypatch):
    monkeypatch.setattr(checks_mod, "_assert_host", host_assertions_pass)


def _run_example(name: str, world: World | None = None, **kwargs):
    example = load_example(name)
    world = world or LoadBalancerWorld()
    conv = example.converger(cluster_factory=world.factory(), **kwargs)
    seen: list[events.Event] = []
    with events.subscribed(seen.append):
        result = conv.run()
    return result, seen, world


def test_nginx_lb_converges_through_a_retry(fake_testinfra):
    result, seen, world = _run_example("nginx-lb")
    assert result.status == "converged", result.reason
    assert result.paths() == ["retry"]
    first = result.iterations[0]
    assert first.diagnosis.failure_class == "config_syntax"
    assert any("[emerg]" in line for line in first.diagnosis.evidence)
    assert "retry with logs" not in first.recovery.reason  # the table's reason, verbatim
    # the reason is drawn from the evidence: class, step, node, the deciding line
    assert first.recovery.reason.startswith("config_syntax in step script:lb on lb")
    assert "/etc/nginx/conf.d/lb.conf:4" in first.recovery.reason
    # attempt 1 fails, attempt 2 passes, then the proof on a third fresh cluster
    assert [(it.phase, it.passed) for it in result.iterations] == [
        ("attempt", False), ("attempt", True), ("verify", True)]
    assert len(world.clusters) == 3 and all(c.state == "down" for c in world.clusters)
    verify = result.iterations[-1]
    assert verify.rerun_steps and all(s.ok for s in verify.rerun_steps)  # idempotence pass
    assert "reload-or-restart" in result.final.scripts["lb"]
    assert first.timings["install_s"] == pytest.approx(1.5)
    kinds = {e.kind for e in seen}
    assert {"run_started", "iteration_started", "step_finished", "check_finished",
            "failure_diagnosed", "recovery_chosen", "synthesized", "run_finished"} <= kinds
    figures = result.figures()
    assert figures["converged"] and figures["iterations"] == 3 \
        and figures["attempts"] == 2  # the same count as RunFinished, the store and MCP
    # a hand-written recording measured no usage: "not measured", never an invented number
    assert figures["paths"] == ["retry"] and figures["tokens"] is None
    assert figures["llm_calls"] == 3 and result.cost.unmeasured_calls == 3
    assert all("install_s" in row for row in figures["per_iteration"])


def test_haproxy_troubleshoots_on_the_live_cluster(fake_testinfra):
    result, seen, world = _run_example("haproxy-nginx")
    assert result.status == "converged", result.reason
    assert result.paths() == ["troubleshoot"]
    first = result.iterations[0]
    assert first.diagnosis.failure_class == "connectivity"
    assert [ex.command for ex in first.troubleshoot] == [
        "curl -sv --max-time 5 http://web1:8080/", "ss -ltnp"]
    assert "127.0.0.1:8080" in first.troubleshoot[1].output
    # the commands ran on the failed cluster, before it went down
    assert "ss -ltnp" in world.clusters[0]["web1"].commands
    turns = [e for e in seen if isinstance(e, events.TroubleshootTurn)]
    assert [t.node for t in turns] == ["lb", "web1"]
    assert "listen 8080;" in result.final.scripts["web"]
    assert any("127.0.0.1:8080" in f for f in result.findings)


def test_the_run_record_is_written_and_replays_to_the_same_outcome(fake_testinfra):
    result, _, _ = _run_example("nginx-lb")
    record = load_run(result.run_id)
    assert record["state"] == "converged" and record["example"] == "nginx-lb"
    assert record["task"]["name"] == "nginx-lb"
    kinds = [e["kind"] for e in load_events(result.run_id)]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert "llm_exchange" in kinds
    recording = Recording.load(Path(record["dir"]) / "llm.jsonl")
    assert [x.purpose for x in recording.exchanges] == ["design", "retry", "synthesize"]
    again, original = replay_run(result.run_id, cluster_factory=LoadBalancerWorld().factory())
    assert again.status == "converged"
    assert same_outcome(again, original)["same"]
    assert load_run(again.run_id)["replay_of"] == result.run_id
    assert {r["run_id"] for r in list_runs()} == {result.run_id, again.run_id}


def test_a_replay_that_no_longer_matches_ends_the_run_with_the_reason(fake_testinfra):
    class SyntaxFixedWorld(LoadBalancerWorld):
        def script(self, node, role, text):  # the first attempt now passes
            return 0, "", ""

    # the recording expects a retry next, the run asks for the synthesis instead
    result, _, _ = _run_example("nginx-lb", world=SyntaxFixedWorld())
    assert result.status == "failed"
    assert "does not match" in result.reason and "'retry'" in result.reason


def test_malformed_answers_are_reasked_then_the_run_ends_with_a_reason():
    bad = ScriptedProvider("not json at all", '{"artifacts": 3}', "")
    conv = Converger(Task.model_validate({**SCRIPT_TASK}), provider=bad,
                     cluster_factory=World().factory())
    result = conv.run()
    assert result.status == "failed"
    assert "no usable answer for 'design' after 3 attempts" in result.reason
    assert len(bad.calls) == 3
    assert "could not be used" in bad.calls[1][1][-1].content


def test_a_seven_node_topology_is_refused_and_the_model_reasked():
    seven = {"topology": {"nodes": [{"name": f"n{i}", "role": "app"} for i in range(7)]},
             "artifacts": _artifacts(), "checks": SCRIPT_TASK["checks"]}
    good = {"topology": {"nodes": [{"name": "node1", "role": "app"}]},
            "artifacts": _artifacts(), "checks": SCRIPT_TASK["checks"]}
    synth = {"artifacts": _artifacts()}
    llm = ScriptedProvider(json.dumps(seven), json.dumps(good), json.dumps(synth))
    task = Task(request="a file /srv/hello saying hi")
    world = World()
    world.command = lambda node, command: (0, "hi\n", "")  # type: ignore[method-assign]
    result = Converger(task, provider=llm, cluster_factory=world.factory()).run()
    assert result.status == "converged", result.reason
    reask = llm.calls[1][1][-1].content
    assert "7 nodes asked for, at most 4 allowed" in reask


def test_the_llm_endpoint_down_ends_the_run_with_a_reason():
    down = ScriptedProvider(LLMUnavailable("cannot reach http://127.0.0.1:9/v1",
                                           provider="openai"))
    result = Converger(Task(request="anything"), provider=down,
                       cluster_factory=World().factory()).run()
    assert result.status == "failed"
    assert result.reason.startswith("the model is unavailable: cannot reach")
    assert load_run(result.run_id)["state"] == "failed"


def test_a_real_client_against_a_closed_port_ends_the_run_with_a_reason():
    from antrieb.llm import OpenAIProvider

    llm = OpenAIProvider(model="m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=5)
    result = Converger(Task(request="anything"), provider=llm,
                       cluster_factory=World().factory()).run()
    assert result.status == "failed"
    assert "the model is unavailable: cannot reach" in result.reason


class FailingWorld(World):
    def script(self, node, role, text):
        return 100, "Reading package lists...", "E: Unable to locate package nginx-ful"


def _retry_forever(n: int) -> ScriptedProvider:
    return ScriptedProvider(*[json.dumps({"explanation": f"try {i}", "artifacts": _artifacts()})
                              for i in range(n)])


def test_the_iteration_budget_ends_the_run():
    task = Task.model_validate({**SCRIPT_TASK, "artifacts": _artifacts()})
    world = FailingWorld()
    result = Converger(task, provider=_retry_forever(10), budgets=Budgets(max_iterations=3),
                       cluster_factory=world.factory()).run()
    assert result.status == "budget_exhausted"
    assert result.reason == "iteration budget of 3 used up"
    assert len(result.iterations) == 3 and len(world.clusters) == 3
    assert result.iterations[0].diagnosis.failure_class == "missing_package"
    assert result.iterations[-1].diagnosis is not None  # diagnosed for the record
    assert result.paths() == ["retry", "retry"]


def test_the_token_budget_ends_the_run():
    task = Task.model_validate({**SCRIPT_TASK, "artifacts": _artifacts()})
    result = Converger(task, provider=_retry_forever(10), budgets=Budgets(max_tokens=50),
                       cluster_factory=FailingWorld().factory()).run()
    assert result.status == "budget_exhausted"
    assert "token budget of 50" in result.reason


class SlowWorld(World):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = threading.Event()

    def script(self, node, role, text):
        self.started.set()
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and node.cluster.state == "up":
            time.sleep(0.01)
        return 0, "", ""


def test_the_wall_time_budget_ends_the_run_mid_step():
    task = Task.model_validate({**SCRIPT_TASK, "artifacts": _artifacts()})
    world = SlowWorld(30)
    t0 = time.monotonic()
    result = Converger(task, provider=ScriptedProvider("{}"),
                       budgets=Budgets(max_wall_s=0.5), cluster_factory=world.factory()).run()
    assert result.status == "budget_exhausted" and "wall-time" in result.reason
    assert time.monotonic() - t0 < 15  # the step alone would take 30 s
    assert world.clusters[0].state == "down"


def test_stop_from_another_thread_tears_down_at_once_and_records_stopped():
    task = Task.model_validate({**SCRIPT_TASK, "artifacts": _artifacts()})
    world = SlowWorld(60)
    conv = Converger(task, provider=ScriptedProvider("{}"), cluster_factory=world.factory())
    box = {}
    runner = threading.Thread(target=lambda: box.setdefault("r", conv.run()))
    runner.start()
    assert world.started.wait(10)
    t0 = time.monotonic()
    conv.stop()
    assert world.clusters[0].state == "down"
    within("stop (thread) -> cluster down", world.clusters[0].down_at - t0, goal=1.0)
    runner.join(5)
    assert not runner.is_alive()
    result = box["r"]
    assert result.status == "stopped" and result.reason == "stopped by the user"
    assert load_run(result.run_id)["state"] == "stopped"


def test_ctrl_c_is_recorded_as_stopped():
    class InterruptingWorld(World):
        def script(self, node, role, text):
            raise KeyboardInterrupt

    task = Task.model_validate({**SCRIPT_TASK, "artifacts": _artifacts()})
    world = InterruptingWorld()
    result = Converger(task, provider=ScriptedProvider("{}"),
                       cluster_factory=world.factory()).run()
    assert result.status == "stopped" and "Ctrl-C" in result.reason
    assert world.clusters[0].state == "down"


def test_ansible_idempotence_needs_changed_zero():
    task = Task.model_validate({
        "name": "ans", "request": "a file", "tool": "ansible",
        "topology": {"nodes": [{"name": "ctl", "role": "control",
                                "image": "debian-12-ansible"},
                               {"name": "m1", "role": "managed"}]},
        "artifacts": {"tool": "ansible", "control": "ctl", "playbook": "- hosts: all"},
        "checks": [{"name": "f", "node": "m1", "command": "true", "attempts": 1}]})

    class AnsibleWorld(World):
        def answer(self, node: FakeNode, command: str):
            if "ansible-playbook" in command:
                return 0, "PLAY RECAP\nm1 : ok=2 changed=1 unreachable=0 failed=0\n", ""
            return 0, "", ""

    synth = json.dumps({"artifacts": task.artifacts.model_dump()})
    retry = json.dumps({"explanation": "x", "artifacts": task.artifacts.model_dump()})
    result = Converger(task, provider=ScriptedProvider(synth, retry),
                       budgets=Budgets(max_iterations=2),
                       cluster_factory=AnsibleWorld().factory()).run()
    verify = result.iterations[1]
    assert verify.phase == "verify" and not verify.passed
    assert verify.rerun_steps[0].changed == 1
    assert "changed=1" in verify.rerun_steps[0].stderr
    assert result.status == "budget_exhausted"


def test_every_recorded_event_is_a_typed_event(fake_testinfra):
    result, _, _ = _run_example("haproxy-nginx")
    rows = load_events(result.run_id)
    parsed = [events.event_adapter.validate_python(row) for row in rows]
    chosen = [e for e in parsed if isinstance(e, events.RecoveryChosen)]
    assert [(e.path, e.failure_class) for e in chosen] == [("troubleshoot", "connectivity")]
    assert chosen[0].reason and chosen[0].evidence


class SlowBalancerWorld(LoadBalancerWorld):
    """Scripts take a moment, so two runs in threads really overlap."""

    def script(self, node, role, text):
        time.sleep(0.3)
        return super().script(node, role, text)


def test_two_runs_in_one_process_record_only_their_own_events(fake_testinfra):
    convs = [load_example("nginx-lb").converger(
        cluster_factory=SlowBalancerWorld().factory())
             for _ in range(2)]
    seen: list[events.Event] = []
    with events.subscribed(seen.append):
        threads = [threading.Thread(target=c.run) for c in convs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert all(c.result.status == "converged" for c in convs), [c.result.reason for c in convs]
    for conv in convs:
        recorded = load_events(conv.run_id)
        assert {e["scope"] for e in recorded} == {conv.run_id}
        assert sum(e["kind"] == "llm_exchange" for e in recorded) == 3  # its own 3 calls
        assert conv.result.cost.llm_calls == 3
    # both runs overlapped, and an outside listener still sees everything
    assert {e.scope for e in seen} == {c.run_id for c in convs}
