"""A live run in a notebook: the engine in its thread, the widget folding its events, a
stop from the widget's button. The cluster is the converge tier's in-memory twin (the
engine on real VMs is tested in tests/vm); what is tested here is the notebook side."""

from __future__ import annotations

import threading
import time

import pytest

from antrieb.converge import Converger, Task
from antrieb.converge import checks as checks_mod
from antrieb.examples import load_example
from antrieb.notebook.live import LiveRun
from tests.timebounds import within
from tests.unit.converge.fakes import LoadBalancerWorld, World, host_assertions_pass
from tests.unit.llm.fakes import ScriptedProvider


@pytest.fixture(autouse=True)
def _twin(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(checks_mod, "_sleep", lambda seconds: None)
    monkeypatch.setattr(checks_mod, "_assert_host", host_assertions_pass)


def test_live_run_updates_the_widget_from_the_engine_thread() -> None:
    example = load_example("haproxy-nginx")
    world = LoadBalancerWorld()
    run = LiveRun(example.converger(cluster_factory=world.factory())).start()
    result = run.wait()
    assert result.status == "converged" and result.paths() == ["troubleshoot"]
    view = run.state.view
    assert view.status == "converged"
    assert [it.passed for it in view.iterations] == [it.passed for it in result.iterations]
    assert [t.command for t in view.iterations[0].turns] == \
        [t.command for t in result.iterations[0].troubleshoot]
    assert view.iterations[1].artifacts == result.iterations[1].artifacts.texts()
    assert "converged" in run.widget.header.value
    assert "ss -ltnp" in run.widget.transcript.value
    assert 'antrieb-diff-add">+    listen 8080;' in run.widget.timeline.value
    assert run.widget.stop_button is not None and run.widget.stop_button.disabled


class _Slow(World):
    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()

    def script(self, node, role, text):
        self.started.set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and node.cluster.state == "up":
            time.sleep(0.01)
        return 0, "", ""


def test_the_stop_button_stops_the_run_and_the_cluster() -> None:
    task = Task.model_validate({
        "name": "slow", "request": "a file", "topology": {"nodes": [
            {"name": "node1", "role": "app"}]},
        "artifacts": {"tool": "shell", "scripts": {"app": "sleep 60"}},
        "checks": [{"name": "f", "node": "node1", "command": "true"}]})
    world = _Slow()
    run = LiveRun(Converger(task, provider=ScriptedProvider("{}"),
                            cluster_factory=world.factory())).start()
    assert world.started.wait(10)
    t0 = time.monotonic()
    run.widget.stop_button.click()  # what the button in the notebook does
    result = run.wait()
    assert world.clusters[0].state == "down"
    within("stop button -> cluster down", world.clusters[0].down_at - t0, goal=1.0)
    assert result.status == "stopped" and result.reason == "stopped from the notebook"
    assert run.state.view.status == "stopped"
    assert run.widget.stop_button.disabled


def test_runs_inside_an_experiment_are_tagged_and_linked(monkeypatch) -> None:
    from antrieb.converge.record import load_run
    from antrieb.notebook.experiment_record import linked_runs as _linked_runs

    monkeypatch.setenv("ANTRIEB_EXPERIMENT", "x-test/3")
    example = load_example("nginx-lb")
    result = example.converger(cluster_factory=LoadBalancerWorld().factory()).run()
    record = load_run(result.run_id)
    assert (record["experiment_id"], record["experiment_index"]) == ("x-test", 3)
    run_ids, dirs, mode = _linked_runs("x-test", 3)
    assert dirs == {result.run_id: result.record_dir}
    assert run_ids == [result.run_id] and mode == "live"
    assert _linked_runs("x-test", 2)[0] == []


def test_a_kernel_interrupt_while_waiting_stops_the_run() -> None:
    task = Task.model_validate({
        "name": "slow", "request": "a file", "topology": {"nodes": [
            {"name": "node1", "role": "app"}]},
        "artifacts": {"tool": "shell", "scripts": {"app": "sleep 60"}},
        "checks": [{"name": "f", "node": "node1", "command": "true"}]})
    world = _Slow()
    run = LiveRun(Converger(task, provider=ScriptedProvider("{}"),
                            cluster_factory=world.factory())).start()
    assert world.started.wait(10)
    join = run._thread.join
    interrupts = [KeyboardInterrupt()]

    def interrupted_join(timeout=None):  # the interrupt lands while the cell waits
        if interrupts:
            raise interrupts.pop()
        join(timeout)

    run._thread.join = interrupted_join  # type: ignore[method-assign]
    result = run.wait()
    assert result.status == "stopped" and "kernel interrupt" in result.reason
    assert world.clusters[0].state == "down"
