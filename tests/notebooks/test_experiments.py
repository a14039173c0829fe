"""Experiments: a grid through papermill, recorded, returned as a DataFrame, re-run from
its record; and the CLI on top."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from antrieb.errors import TaskError
from antrieb.notebook.experiments import (
    expand_grid,
    load_experiment,
    rerun_experiment,
    run_experiment,
)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "experiment.ipynb"


def test_grid_expansion() -> None:
    assert expand_grid({"mode": "recorded"}, {"example": ["a", "b"], "max_iterations": [2, 3]}) \
        == [{"example": "a", "max_iterations": 2, "mode": "recorded"},
            {"example": "a", "max_iterations": 3, "mode": "recorded"},
            {"example": "b", "max_iterations": 2, "mode": "recorded"},
            {"example": "b", "max_iterations": 3, "mode": "recorded"}]
    assert expand_grid({"x": 1}, [{"example": "a"}, {"example": "b", "x": 5}]) == \
        [{"example": "a", "x": 1}, {"example": "b", "x": 1}]  # -p wins over the grid
    assert expand_grid(None, {"parameters": {"m": 1}, "grid": {"e": ["a"]}}) == \
        [{"e": "a", "m": 1}]
    with pytest.raises(TaskError):
        expand_grid(None, ["not a mapping"])  # type: ignore[list-item]
    with pytest.raises(TaskError):
        expand_grid(None, [])


def test_experiment_runs_records_and_reruns(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    grid = {"example": ["nginx-lb", "no-such-example"]}
    df = run_experiment(NOTEBOOK, {"mode": "recorded"}, grid=grid)
    assert list(df["example"]) == ["nginx-lb", "no-such-example"]
    assert list(df["status"]) == ["ok", "failed"]  # a failing entry is recorded, not fatal
    assert "no-such-example" in df["error"][1]
    ok = df.iloc[0]
    # recorded mode starts no run: the entry links the recorded run it showed
    recorded = json.loads((Path(__file__).resolve().parents[2] / "antrieb" / "examples" /
                           "nginx-lb" / "run" / "run.json").read_text())["run_id"]
    assert ok["mode"] == "recorded" and ok["run_ids"] == [recorded]
    assert ok["converged"] and ok["iterations"] == 3 and ok["paths"] == ["retry"]
    assert Path(ok["output"]).is_file()
    xid = ok["experiment_id"]
    record = load_experiment(xid)
    assert (tmp_path / "experiments" / xid / "experiment.json").is_file()
    assert [e["parameters"] for e in record["grid"]] == [
        {"example": "nginx-lb", "mode": "recorded"},
        {"example": "no-such-example", "mode": "recorded"}]
    entry = record["grid"][0]
    assert entry["started"] <= entry["finished"] and entry["error"] is None
    again = rerun_experiment(xid)
    assert again["experiment_id"][0] != xid
    assert load_experiment(again["experiment_id"][0])["rerun_of"] == xid
    cols = ["example", "mode", "status", "run_ids", "converged", "iterations", "paths"]
    assert again[cols].astype(str).to_dict("records") == df[cols].astype(str).to_dict("records")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # the installed entry point (python -m antrieb.cli would make a second app object)
    antrieb = str(Path(sys.executable).parent / "antrieb")
    done = subprocess.run([antrieb, "experiment", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    done.stderr = " ".join(done.stderr.split())  # rich wraps long messages
    return done


def test_cli_refuses_bad_input_before_running_anything(tmp_path: Path) -> None:
    env = {"ANTRIEB_CACHE": str(tmp_path)}
    bad = _cli("run", str(NOTEBOOK), "-p", "example", env=env)
    assert bad.returncode == 2 and "-p NAME VALUE" in bad.stderr
    missing = _cli("run", str(tmp_path / "nope.ipynb"), env=env)
    assert missing.returncode == 2 and "no such notebook" in missing.stderr
    unknown = _cli("rerun", "x-none", env=env)
    assert unknown.returncode == 2 and "experiment" in unknown.stderr
    assert not (tmp_path / "experiments").exists() or not any(
        (tmp_path / "experiments").iterdir())


def test_cli_runs_a_grid_file_and_prints_json(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  example: [haproxy-nginx]\n")
    done = _cli("run", str(NOTEBOOK), "-p", "mode", "recorded", "-p", "speed", "0",
                "--grid", str(grid), "--json", env={"ANTRIEB_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["example"], r["status"], r["paths"], r["speed"]) for r in rows] == \
        [("haproxy-nginx", "ok", ["troubleshoot"], 0)]  # "0" was read as YAML: a number
    listed = _cli("list", "--json", env={"ANTRIEB_CACHE": str(tmp_path)})
    assert json.loads(listed.stdout)[0]["experiment_id"] == rows[0]["experiment_id"]
