"""run_eval on the in-memory cluster twin: the answers of the known providers go through
the normal engine, every run is recorded, the figures and the experiment record come out,
Ctrl-C keeps what finished. tests/vm/test_eval.py runs the same code on real VMs."""

from __future__ import annotations

import _thread
import json
import threading
import time
from pathlib import Path

import pytest

from antrieb.converge import checks as checks_mod
from antrieb.converge.record import load_run
from antrieb.errors import ConfigError, UnknownNameError
from antrieb.eval import run_eval
from antrieb.llm import Recording
from antrieb.notebook.experiments import experiment_frame, load_experiment
from antrieb.store import table

from ..converge.fakes import LoadBalancerWorld, host_assertions_pass

TASKS = ["nginx-lb", "haproxy-nginx"]


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(checks_mod, "_sleep", lambda seconds: None)
    monkeypatch.setattr(checks_mod, "_assert_host", host_assertions_pass)


def test_the_oracle_converges_every_task_and_the_near_miss_none():
    world = LoadBalancerWorld()
    lines: list[str] = []
    ev = run_eval(["oracle", "near-miss"], TASKS, repeats=2, slots=2,
                  budgets={"max_iterations": 2}, cluster_factory=world.factory(),
                  log=lines.append)
    assert not ev.interrupted and ev.ks == [1, 2] and len(ev.rows) == 8
    overall = ev.per_llm.set_index("llm")
    assert overall.loc["oracle", "pass@1"] == 1.0 and overall.loc["oracle", "pass@2"] == 1.0
    assert overall.loc["near-miss", "pass@1"] == 0.0
    assert overall.loc["oracle", "mean_iterations"] == 2.0  # the attempt and the proof
    runs = ev.runs
    near = runs[runs.llm == "near-miss"].set_index(["task", "repeat"])
    assert set(near.status) == {"budget_exhausted"}
    assert near.loc[("nginx-lb", 0), "failure_classes"] == ["config_syntax", "config_syntax"]
    assert set(near.loc[("haproxy-nginx", 0), "failure_classes"]) == {"connectivity"}
    assert near.loc[("haproxy-nginx", 0), "paths"] == ["troubleshoot"]
    per_task = ev.per_task.set_index(["llm", "task"])
    assert per_task.loc[("near-miss", "nginx-lb"), "failure_classes"] == {"config_syntax": 4}
    assert runs.tokens.isna().all()  # nobody measured: not zero
    assert len(lines) == 8 and lines[-1].startswith("[8/8] ")


def test_every_run_is_recorded_with_its_conversation_and_the_experiment():
    world = LoadBalancerWorld()
    ev = run_eval("oracle", ["nginx-lb"], cluster_factory=world.factory(), slots=1)
    (row,) = ev.rows
    record = load_run(row["run_id"])
    assert record["state"] == "converged" and record["provider"] == "oracle"
    assert record["experiment_id"] == ev.experiment_id and record["experiment_index"] == 0
    assert record["eval"] == {"llm": "oracle", "task": "nginx-lb", "repeat": 0}
    purposes = [x.purpose for x in Recording.load(Path(record["dir"]) / "llm.jsonl").exchanges]
    assert purposes == ["design", "synthesize"]
    experiment = load_experiment(ev.experiment_id)
    assert experiment["kind"] == "eval" and experiment["interrupted"] is False
    assert experiment["eval"]["tasks"] == ["nginx-lb"]
    assert experiment["summary"][0]["llm"] == "oracle"
    (entry,) = experiment["grid"]
    assert entry["status"] == "ok" and entry["run_ids"] == [row["run_id"]]
    assert entry["parameters"] == {"llm": "oracle", "task": "nginx-lb", "repeat": 0}
    frame = experiment_frame(ev.experiment_id)  # what `antrieb experiment show` prints
    assert frame.converged.tolist() == [True] and frame.task.tolist() == ["nginx-lb"]
    points = table("experiment_points")  # and the store (Grafana's experiments dashboard)
    assert points.experiment_id.tolist() == [ev.experiment_id]
    assert table("runs").set_index("run_id").loc[row["run_id"], "experiment_id"] == \
        ev.experiment_id
    assert json.dumps(ev.to_dict(), default=str)


def test_bad_input_fails_before_any_cluster(monkeypatch):
    world = LoadBalancerWorld()
    for key in ("ANTRIEB_MODEL", "OPENAI_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="no LLM model"):
        run_eval("openai", TASKS, cluster_factory=world.factory())
    with pytest.raises(UnknownNameError, match="nginx-lb"):
        run_eval("oracle", ["no-such-task"], cluster_factory=world.factory())
    with pytest.raises(ConfigError, match="max_iterations"):
        run_eval("oracle", TASKS, budgets={"max_iterations": 0},
                 cluster_factory=world.factory())
    with pytest.raises(ConfigError, match="repeats"):
        run_eval("oracle", TASKS, repeats=0, cluster_factory=world.factory())
    assert world.clusters == []


def test_ctrl_c_stops_the_runs_and_keeps_what_finished(sigint_handled):
    blocked = threading.Event()

    class SlowSecondRun(LoadBalancerWorld):
        def script(self, node, role, text):
            if len(self.clusters) > 2:  # the first run had two: its attempt and its proof
                blocked.set()
                deadline = time.monotonic() + 60  # a failure, not a hang, if stop() fails
                while node.cluster.state == "up" and time.monotonic() < deadline:
                    threading.Event().wait(0.01)  # until stop() takes the cluster down
            return super().script(node, role, text)

    def interrupt() -> None:
        if blocked.wait(30):
            _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    world = SlowSecondRun()
    ev = run_eval("oracle", ["nginx-lb"], repeats=3, slots=1, cluster_factory=world.factory())
    assert ev.interrupted
    assert [r["status"] for r in ev.rows] == ["converged", "stopped"]
    assert ev.per_llm.loc[0, "runs"] == 1  # the stopped run is not scored
    assert all(c.state == "down" for c in world.clusters)
    grid = load_experiment(ev.experiment_id)["grid"]
    assert [e["status"] for e in grid] == ["ok", "stopped", "cancelled"]
    assert grid[2]["run_ids"] == [] and load_experiment(ev.experiment_id)["interrupted"]


def test_a_recorded_evaluation_reads_back_the_same():
    from antrieb.eval import list_evals, load_eval

    ev = run_eval(["oracle", "near-miss"], ["nginx-lb"], repeats=2, slots=2,
                  budgets={"max_iterations": 2},
                  cluster_factory=LoadBalancerWorld().factory())
    again = load_eval()  # the latest
    assert again.experiment_id == ev.experiment_id and again.ks == [1, 2]
    strip = ("model", "record_dir")
    assert sorted(({k: v for k, v in r.items() if k not in strip} for r in again.rows),
                  key=lambda r: (r["llm"], r["repeat"])) == [
        {k: v for k, v in r.items() if k not in strip} for r in ev.rows]
    assert again.to_dict()["overall"] == ev.to_dict()["overall"]
    (row,) = list_evals()
    assert row["llms"] == ["oracle", "near-miss"] and row["runs"] == 4
    with pytest.raises(UnknownNameError):
        load_eval("x-none")


def test_recorded_runs_of_any_kind_score_like_an_evaluation():
    from antrieb.eval import eval_of_runs
    from antrieb.examples import list_examples

    folders = [e.reference_run() for e in list_examples()]
    ev = eval_of_runs(folders)
    assert ev.per_llm.loc[0, "llm"] == "replay:hand-authored"
    assert ev.per_llm.loc[0, "pass@1"] == 1.0 and len(ev.rows) == len(folders)
    assert set(ev.runs.record_dir) == {str(f) for f in folders}
    assert (ev.runs.iterations == 3).all()  # a failed attempt, the fixed one, the proof
