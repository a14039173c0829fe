"""`antrieb tasks` and `antrieb eval` on the cluster twin: JSON shapes and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from antrieb.cli import app
from antrieb.converge import checks as checks_mod
from antrieb.converge import converger, runs
from antrieb.tasks import load_task

from ..converge.fakes import LoadBalancerWorld, host_assertions_pass

runner = CliRunner()


@pytest.fixture(autouse=True)
def twin(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    world = LoadBalancerWorld()
    monkeypatch.setattr(converger, "default_cluster_factory", world.factory())
    monkeypatch.setattr(checks_mod, "_assert_host", host_assertions_pass)
    monkeypatch.setattr(checks_mod, "_sleep", lambda seconds: None)
    monkeypatch.setattr(runs, "warm_up", lambda images: None)  # no images for a twin
    return world


def test_tasks_list_json():
    r = runner.invoke(app, ["tasks", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert len(rows) >= 15
    row = rows["nginx-lb"]
    assert set(row) == {"name", "title", "category", "tool", "nodes", "images", "checks",
                        "near_miss", "example", "last_verified"}
    assert row["nodes"] == ["lb", "web1", "web2"] and row["example"] == "nginx-lb"
    assert row["last_verified"] is None


def test_tasks_show_json_has_both_answers():
    r = runner.invoke(app, ["tasks", "show", "nginx-static", "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["reference"]["scripts"]["web"].startswith("#!/bin/bash")
    assert shown["near_miss_artifacts"]["tool"] == "shell"
    assert shown["task"]["checks"][0]["node"] == "web"
    assert runner.invoke(app, ["tasks", "show", "no-such-task"]).exit_code == 2


def test_tasks_verify_json_then_list_shows_when(twin):
    r = runner.invoke(app, ["tasks", "verify", "nginx-lb", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["tasks"], summary["passed"]) == (1, 1) and summary["wall_s"] >= 0
    (v,) = summary["verifications"]
    assert v["task"] == "nginx-lb" and v["result"] == "passed" and v["reference"] is True
    assert v["near_miss_failed_at"] == "apply" and v["proof"] is True  # the missing ';'
    assert "refused" not in r.stderr and "reference: passes" in r.stderr
    listed = {row["name"]: row for row in json.loads(
        runner.invoke(app, ["tasks", "list", "--json"]).stdout)}
    assert listed["nginx-lb"]["last_verified"]["verified_at"] == v["verified_at"]
    assert len(twin.clusters) == 3


def test_tasks_verify_refuses_a_trivial_task_file_with_exit_2(tmp_path):
    data = yaml.safe_load(Path(load_task("nginx-static").source).read_text())
    data["task"]["checks"] = [{"name": "ok", "node": "web", "command": "exit 0"}]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    r = runner.invoke(app, ["tasks", "verify", str(path)])
    assert r.exit_code == 2 and "refused" in r.stderr and "does nothing" in r.stderr


def test_eval_json_scores_the_oracle_and_the_near_miss(twin):
    r = runner.invoke(app, ["eval", "--llm", "oracle", "--llm", "near-miss", "--tasks",
                            "nginx-lb,haproxy-nginx", "--budget", "max_iterations=2",
                            "--slots", "2", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) >= {"experiment_id", "interrupted", "llms", "tasks", "repeats", "budgets",
                        "ks", "overall", "per_task", "runs"}
    assert doc["budgets"]["max_iterations"] == 2 and doc["ks"] == [1]
    overall = {row["llm"]: row for row in doc["overall"]}
    assert overall["oracle"]["pass@1"] == 1.0 and overall["near-miss"]["pass@1"] == 0.0
    assert overall["near-miss"]["failure_classes"] == {"config_syntax": 2, "connectivity": 2}
    per_task = {(row["llm"], row["task"]): row for row in doc["per_task"]}
    assert per_task[("oracle", "haproxy-nginx")]["mean_iterations"] == 2.0
    assert len(doc["runs"]) == 4 and all(row["run_id"] for row in doc["runs"])
    assert "[4/4]" in r.stderr


def test_eval_text_table_and_bad_input():
    r = runner.invoke(app, ["eval", "--llm", "oracle", "--tasks", "nginx-lb"])
    assert r.exit_code == 0, r.output
    assert "oracle" in r.stdout and "pass@1 1.0" in r.stdout
    assert "antrieb experiment show" in r.stderr
    assert runner.invoke(app, ["eval", "--llm", "oracle", "--budget", "x"]).exit_code == 2
    assert runner.invoke(app, ["eval", "--llm", "oracle", "--tasks", "nope"]).exit_code == 2
    bad = runner.invoke(app, ["eval", "--llm", "oracle", "--budget", "max_iterations=0"])
    assert bad.exit_code == 2 and "max_iterations" in bad.stderr
    assert runner.invoke(app, ["eval", "--tasks", "nginx-lb"]).exit_code == 2  # no --llm
    both = runner.invoke(app, ["eval", "--llm", "oracle", "--dask", "tcp://127.0.0.1:1",
                               "--workers", "2"])
    assert both.exit_code == 2 and "exclude each other" in both.stderr
    slots = runner.invoke(app, ["eval", "--llm", "oracle", "--workers", "2", "--slots", "2"])
    assert slots.exit_code == 2 and "--slots is for this host" in slots.stderr
