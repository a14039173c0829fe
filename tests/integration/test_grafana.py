"""The run store in a real PostgreSQL, and every Grafana panel's SQL run against it.

Recorded runs (the examples' real runs) and an experiment go into a SQLite store, are
exported to PostgreSQL (twice: no duplicates), and each query of each dashboard (panels
and variables) runs with Grafana's macros and variables expanded the way Grafana's
PostgreSQL data source expands them; every one must return rows."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from antrieb import store

from .conftest import EXAMPLE_RUNS, EXPERIMENT

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def expand(sql: str, variables: dict[str, str], t_from: int, t_to: int) -> str:
    """Grafana's PostgreSQL macros (the ones our dashboards use) and ``$var``."""
    def group(m: re.Match) -> str:
        col, interval = m.group(1).strip(), m.group(2).strip()
        seconds = int(interval[:-1]) * UNITS[interval[-1]]
        return f'floor(({col})/{seconds})*{seconds} AS "time"'

    sql = re.sub(r"\$__unixEpochGroupAlias\(([^,]+),\s*([0-9]+[smhd])\)", group, sql)
    sql = re.sub(r"\$__unixEpochFilter\(([^)]+)\)",
                 lambda m: f"{m.group(1)} >= {t_from} AND {m.group(1)} <= {t_to}", sql)
    for name, value in variables.items():
        assert "'" not in value
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    leftover = re.findall(r"\$\{?\w+", sql)
    assert not leftover, f"unexpanded macro or variable {leftover} in: {sql}"
    return sql


def queries(board: dict) -> list[tuple[str, str]]:
    out = [(f"variable {v['name']}", v["query"]) for v in board["templating"]["list"]]
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r}", target["rawSql"]))
    return out


@pytest.fixture(scope="module")
def loaded(postgres, tmp_path_factory):
    """Recorded runs + an experiment, via the local store, exported to PostgreSQL."""
    import os

    from antrieb.converge.record import runs_dir

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("ANTRIEB_CACHE")
    os.environ["ANTRIEB_CACHE"] = str(cache)
    try:
        for folder in EXAMPLE_RUNS:
            store.ingest_run(folder)
            run_id = json.loads((folder / "run.json").read_text())["run_id"]
            (runs_dir() / run_id).symlink_to(folder.resolve())
        store.ingest_experiment(EXPERIMENT)
        url = postgres.createdb("antrieb_grafana")
        t0 = time.monotonic()
        first = store.export(to=url)
        export_s = time.monotonic() - t0
        second = store.export(to=url)
        local = store.connect()
        counts = {t: local.count(t) for t in store.TABLES}
        local.close()
    finally:
        if old is None:
            os.environ.pop("ANTRIEB_CACHE", None)
        else:
            os.environ["ANTRIEB_CACHE"] = old
    print(f"\nexport of {counts['runs']} runs ({sum(counts.values())} rows) to PostgreSQL: "
          f"{export_s:.2f}s")
    return {"url": url, "first": first, "second": second, "local": counts}


def test_export_to_postgres_has_no_duplicates(loaded):
    assert loaded["first"] == loaded["second"] == loaded["local"]
    assert loaded["first"]["runs"] == len(EXAMPLE_RUNS)
    db = store.connect(loaded["url"])
    assert db.dialect == "postgresql" and db.version() == store.LATEST
    df = store.runs(db=db)
    assert set(df["status"]) == {"converged"}
    assert set(df["paths"]) >= {"retry", "troubleshoot"}
    db.close()


def test_every_panel_returns_rows(loaded):
    import psycopg

    assert {p.name for p in DASHBOARDS} == {"antrieb-overview.json", "antrieb-run.json",
                                            "antrieb-experiments.json"}
    conn = psycopg.connect(loaded["url"], autocommit=True)
    haproxy = conn.execute("SELECT run_id FROM runs WHERE task_name = 'haproxy-nginx'"
                           ).fetchone()[0]
    variables = {"run_id": haproxy, "experiment_id": "e20261130-070000-lbgrid"}
    now = int(time.time())
    ran = 0
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for where, sql in queries(board):
            rows = conn.execute(expand(sql, variables, 0, now + 86400)).fetchall()
            assert rows, f"{path.name} {where} returned no rows"
            assert any(v is not None for row in rows for v in row), f"{path.name} {where}"
            ran += 1
    conn.close()
    assert ran >= 30


def test_run_detail_panels_for_every_recorded_run(loaded):
    """Every run has iterations, checks, steps, LLM calls, a log and a final script."""
    import psycopg

    board = json.loads((GRAFANA / "dashboards" / "antrieb-run.json").read_text())
    conn = psycopg.connect(loaded["url"], autocommit=True)
    run_ids = [r[0] for r in conn.execute("SELECT run_id FROM runs").fetchall()]
    for run_id in run_ids:
        for where, sql in queries(board):
            if "troubleshoot" in where.lower():  # only runs that troubleshot have turns
                continue
            rows = conn.execute(expand(sql, {"run_id": run_id}, 0, 2**31)).fetchall()
            assert rows, f"{run_id}: {where}"
    conn.close()


def test_dashboards_and_provisioning_agree():
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/antrieb.yaml").read_text())
    source = ds["datasources"][0]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/antrieb.yaml").read_text())
    compose = yaml.safe_load((GRAFANA / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": source["type"], "uid": source["uid"]}
            assert all(panel["gridPos"][k] >= 0 for k in ("x", "y"))
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for link in board["links"]:
            assert link["url"].split("/")[2] in {"antrieb-overview", "antrieb-run",
                                                  "antrieb-experiments"}
    assert uids == {"antrieb-overview", "antrieb-run", "antrieb-experiments"}
