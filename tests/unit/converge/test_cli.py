"""The convergence CLI on the cluster twin: JSON shapes and exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from antrieb.cli import app
from antrieb.converge import checks as checks_mod
from antrieb.converge import converger, runs

from .fakes import LoadBalancerWorld, host_assertions_pass

runner = CliRunner()


@pytest.fixture
def twin(monkeypatch):
    world = LoadBalancerWorld()
    monkeypatch.setattr(converger, "default_cluster_factory", world.factory())
    monkeypatch.setattr(checks_mod, "_assert_host", host_assertions_pass)
    monkeypatch.setattr(runs, "warm_up", lambda images: None)  # no images for a twin
    return world


def test_examples_list_json():
    r = runner.invoke(app, ["examples", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {"nginx-lb", "haproxy-nginx"} <= set(rows)
    paths = {p for row in rows.values() for p in row["expected_paths"]}
    assert {"retry", "troubleshoot"} <= paths


def test_unknown_example_and_run_are_bad_input():
    r = runner.invoke(app, ["examples", "run", "nope"])
    assert r.exit_code == 2 and "no example 'nope'" in r.output
    r = runner.invoke(app, ["runs", "show", "r-none"])
    assert r.exit_code == 2


def test_bench_converge_json_then_runs_list_show_replay(twin):
    r = runner.invoke(app, ["bench", "converge", "nginx-lb", "--json"])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout)
    assert figures["converged"] is True and figures["paths"] == ["retry"]
    for key in ("iterations", "total_s", "in_vm_s", "llm_s", "overhead_ratio", "install_s"):
        assert key in figures
    assert len(figures["install_s"]) == 3
    runs = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)
    assert runs[0]["run_id"] == figures["run_id"] and runs[0]["state"] == "converged"
    shown = runner.invoke(app, ["runs", "show", figures["run_id"]])
    assert shown.exit_code == 0 and "config_syntax -> retry" in shown.stdout
    replayed = runner.invoke(app, ["runs", "replay", figures["run_id"], "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["same"] is True


def test_run_refuses_bad_input():
    r = runner.invoke(app, ["run", "x", "--nodes", "7"])
    assert r.exit_code == 2
