"""`antrieb store` and `antrieb cluster` on the command line: JSON for programs, exit
codes that mean something, nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from antrieb.cli import app

from ..store.test_store import DATA, EXAMPLE_RUNS

runner = CliRunner()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANTRIEB_STORE", raising=False)


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_import_info_export_as_json(tmp_path):
    dirs = [str(d) for d in EXAMPLE_RUNS]
    first = _json(["store", "import", *dirs, "--experiment", str(DATA / "experiment.json"),
                   "--json"])
    assert len(first["runs"]) == len(dirs) and first["rows"]["experiments"] == 1
    again = _json(["store", "import", *dirs, "--json"])
    assert again["rows"] == first["rows"]
    info = _json(["store", "info", "--json"])
    assert info["dialect"] == "sqlite" and info["schema_version"] == info["latest_schema"]
    assert info["rows"] == first["rows"]
    target = tmp_path / "copy.sqlite"
    exported = _json(["store", "export", "--to", str(target), "--json"])
    assert exported["rows"] == first["rows"]
    other = _json(["store", "info", "--store", str(target), "--json"])
    assert other["rows"] == first["rows"]


def test_import_without_arguments_takes_every_recorded_run():
    from antrieb.converge.record import runs_dir

    for d in EXAMPLE_RUNS:
        (runs_dir() / Path(d).parent.name).symlink_to(Path(d).resolve())
    out = _json(["store", "import", "--json"])
    assert len(out["runs"]) == len(EXAMPLE_RUNS)


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["store", "import", str(tmp_path)])
    assert result.exit_code == 2 and "run.json" in result.stderr
    result = runner.invoke(app, ["store", "import", "--experiment", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    info = _json(["store", "info", "--json"])
    assert set(info["rows"].values()) == {0}
    result = runner.invoke(app, ["store", "export", "--to", "postgresql://nobody@/x?host="
                                 + str(tmp_path)])
    assert result.exit_code == 1 and "cannot connect" in result.stderr
    result = runner.invoke(app, ["mcp", "--port", "0"])
    assert result.exit_code == 2


def test_cluster_up_refuses_bad_input_before_anything_starts():
    result = runner.invoke(app, ["cluster", "up", "--nodes", "5"], input="")
    assert result.exit_code == 2 and "at most 4 nodes" in result.stderr
