"""The run view, its HTML and the widget, fed with the real recorded runs of the examples
(no VMs, no kernel): what they show must be what the engine recorded."""

from __future__ import annotations

import json

import pytest

from antrieb.examples import load_example
from antrieb.notebook import render
from antrieb.notebook.charts import iteration_series, node_series
from antrieb.notebook.playback import load_recorded
from antrieb.notebook.state import RunState

RECORDED = ["firewall", "haproxy-nginx", "nginx-lb", "postgres-replica"]


def _record(name: str) -> dict:
    folder = load_example(name).reference_run()
    assert folder is not None
    return json.loads((folder / "run.json").read_text())


@pytest.mark.parametrize("name", RECORDED)
def test_view_matches_the_record(name: str) -> None:
    recorded = load_recorded(name)
    assert recorded.skipped == []
    view = recorded.view()
    result = _record(name)["result"]
    assert view.status == result["status"] == "converged"
    assert view.run_id == result["run_id"]
    assert [it.number for it in view.iterations] == [it["number"] for it in result["iterations"]]
    assert [it.passed for it in view.iterations] == [it["passed"] for it in result["iterations"]]
    assert [it.recovery["path"] for it in view.iterations if it.recovery] == \
        [it["recovery"]["path"] for it in result["iterations"] if it.get("recovery")]
    for it, rec in zip(view.iterations, result["iterations"], strict=True):
        # the artifacts each iteration ran, as decoded from the events, are the recorded ones
        art = rec["artifacts"]
        want = art["scripts"] if art["tool"] == "shell" else {"playbook": art["playbook"]}
        assert it.artifacts == want
        assert {k: round(v, 3) for k, v in it.timings.items()} == \
            {k: round(v, 3) for k, v in rec["timings"].items() if k in it.timings}
    assert view.synthesized == (result["final"].get("scripts") or
                                {"playbook": result["final"]["playbook"]})


def test_troubleshoot_run_renders_diff_transcript_and_proof() -> None:
    view = load_recorded("haproxy-nginx").view()
    html = render.page(view)
    for cls in ("antrieb-header", "antrieb-cluster", "antrieb-timeline", "antrieb-diff",
                "antrieb-transcript", "antrieb-final", "antrieb-timing", "antrieb-idempotence"):
        assert cls in html, cls
    # the fix found while troubleshooting shows as a diff line, removed and added
    assert 'antrieb-diff-del">-    listen 127.0.0.1:8080;' in html
    assert 'antrieb-diff-add">+    listen 8080;' in html
    assert "ss -ltnp" in render.transcript(view)
    assert "playback of a run recorded 2026-12-02" in html
    assert "idempotent" in render.final(view)
    # the proof's gates and the residue report, from the run's ProofFinished event
    assert "reboot: every node rebooted, every check passed again" in render.final(view)
    assert "nothing left behind" in render.final(view) or "Residue" in render.final(view)


def test_charts_are_the_engine_timings() -> None:
    view = load_recorded("nginx-lb").view()
    result = _record("nginx-lb")["result"]
    x, ys = iteration_series(view)
    assert x == ["#1 attempt", "#2 attempt", "#3 verify"]
    assert ys["apply"] == [round(it["timings"]["apply_s"], 2) for it in result["iterations"]]
    assert all(v > 0 for v in ys["teardown"])  # from the stopping -> down events
    y, xs = node_series(view)
    assert len(y) == sum(len(it.roles) for it in view.iterations)
    assert all(v > 0 for v in xs["package installs"])


def test_events_of_other_runs_are_ignored() -> None:
    recorded = load_recorded("nginx-lb")
    other = load_recorded("haproxy-nginx")
    state = RunState(run_id=recorded.run_id)
    for a, b in zip(recorded.events, other.events, strict=False):
        state.apply(a)
        state.apply(b)
    for e in recorded.events[len(other.events):]:
        state.apply(e)
    assert state.view.task_name == "nginx-lb"
    assert all(it.cluster_id for it in state.view.iterations)
    assert not any(it.turns for it in state.view.iterations)  # haproxy's turns kept out


def test_widget_bundle_carries_widget_and_static_html() -> None:
    from antrieb.notebook.widget import RunWidget

    recorded = load_recorded("nginx-lb")
    widget = RunWidget(recorded.state())
    for event in recorded.events:
        widget.on_event(event)
    widget.finish()
    bundle = widget._repr_mimebundle_()
    assert "model_id" in bundle["application/vnd.jupyter.widget-view+json"]
    assert "antrieb-timeline" in bundle["text/html"]
    assert "converged" in widget.header.value
    figure = widget.iteration_chart.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    apply = next(t for t in figure["data"] if t["name"] == "apply")
    assert list(apply["y"]) == [
        round(it["timings"]["apply_s"], 2) for it in _record("nginx-lb")["result"]["iterations"]]


def test_cluster_shows_a_compact_widget_and_a_static_table() -> None:
    from antrieb import Cluster, events
    from antrieb.notebook.cluster_view import ClusterWidget

    cluster = Cluster(nodes=[{"name": "lb", "role": "lb"}, {"name": "web1", "role": "web"}])
    bundle = cluster._repr_mimebundle_()  # what a notebook cell shows for a Cluster
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "<td>lb</td><td>lb</td><td>debian-12</td>" in bundle["text/html"]
    widget = ClusterWidget(cluster)
    ip = cluster.plans[1].ip
    events.emit(events.VMStateChanged(cluster=cluster.id, node="web1", state="running", ip=ip))
    events.emit(events.VMStateChanged(cluster="other", node="lb", state="failed"))
    events.emit(events.ClusterReady(cluster=cluster.id, driver="qemu", accel="tcg",
                                    nodes={"lb": cluster.plans[0].ip, "web1": ip},
                                    seconds=0.6, node_seconds={"lb": 0.4, "web1": 0.5}))
    html = widget.view.value
    assert f'<td>{ip}</td><td><span class="antrieb-badge running">running' in html
    assert "badge failed" not in html and "0.50s" in html
    events.emit(events.ClusterStateChanged(cluster=cluster.id, state="down"))
    events.emit(events.VMStateChanged(cluster=cluster.id, node="web1", state="stopped"))
    assert "badge stopped" not in widget.view.value  # unsubscribed once the cluster is down


def test_playback_reads_events_whose_texts_hold_unicode_line_separators(tmp_path) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(load_example("nginx-lb").reference_run(), folder)
    lines = (folder / "events.jsonl").read_text().split("\n")
    odd = json.loads(lines[-2])
    assert odd["kind"] == "run_finished"
    odd["reason"] += " \u0085 and \u2028"
    lines[-2] = json.dumps(odd, ensure_ascii=False)
    (folder / "events.jsonl").write_text("\n".join(lines))
    recorded = load_recorded(folder)
    assert recorded.skipped == []
    assert recorded.view().reason.endswith("\u0085 and \u2028")
