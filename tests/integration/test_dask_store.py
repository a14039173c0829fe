"""Experiments on Dask with the shared PostgreSQL store: two ``dask worker`` processes,
whose own environment names the store (as on hypervisor hosts), write every grid point
and its runs into it while the client keeps its private SQLite; the rows equal those of
the same grid run locally."""

from __future__ import annotations

import os
from typing import Any

import pytest

from antrieb import store
from antrieb.notebook.experiments import load_experiment, run_experiment
from tests.integration.test_dask_experiment import GRID, NOTEBOOK, dask_cluster

# what differs between two runs of one grid, or says where a point ran
_PLACE = {"experiment_id", "output", "started", "finished", "worker", "host", "attempts"}


def grid_rows(db: store.Database, xid: str) -> dict[str, list[dict[str, Any]]]:
    """An experiment's rows in one store, without ids, paths, times and places."""
    def rows(sql: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in _PLACE}
                for r in db.dicts(sql, [xid])]

    return {
        "points": rows("SELECT * FROM experiment_points WHERE experiment_id = ? ORDER BY idx"),
        "parameters": rows("SELECT * FROM experiment_parameters WHERE experiment_id = ? "
                           "ORDER BY idx, name"),
        "runs": rows("SELECT er.idx, r.run_id, r.status, r.iterations, r.total_s "
                     "FROM experiment_runs er JOIN runs r ON r.run_id = er.run_id "
                     "WHERE er.experiment_id = ? ORDER BY er.idx, r.run_id"),
    }


@pytest.mark.timeout(900)
def test_workers_write_the_grid_into_the_shared_postgresql(
        postgres, private_cache, tmp_path, monkeypatch) -> None:
    from distributed import Client

    url = postgres.createdb("antrieb_dask")
    monkeypatch.setenv("ANTRIEB_STORE", url)  # the grid run here, ingested by this process
    local = run_experiment(NOTEBOOK, {"mode": "recorded"}, grid=GRID)
    monkeypatch.delenv("ANTRIEB_STORE")  # from now on this process writes its SQLite only
    workers_env = {**os.environ, "ANTRIEB_STORE": url}
    with dask_cluster(tmp_path, env=workers_env) as (address, _), \
            Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        addresses = set(client.scheduler_info()["workers"])
        spread = run_experiment(NOTEBOOK, {"mode": "recorded"}, grid=GRID, client=client)
    xid = spread["experiment_id"][0]
    record = load_experiment(xid)
    pg = store.connect(url)
    try:
        # the client never wrote here: the experiment's row has no record path
        assert pg.dicts("SELECT points, path FROM experiments WHERE experiment_id = ?",
                        [xid]) == [{"points": len(GRID["example"]), "path": None}]
        points = pg.dicts("SELECT idx, status, worker, host FROM experiment_points "
                          "WHERE experiment_id = ? ORDER BY idx", [xid])
        assert [(p["idx"], p["status"], p["worker"]) for p in points] == \
            [(e["index"], e["status"], e["worker"]) for e in record["grid"]]
        assert {p["worker"] for p in points} == addresses  # both workers wrote
        links = pg.dicts("SELECT er.idx, er.run_id, r.status FROM experiment_runs er "
                         "LEFT JOIN runs r ON r.run_id = er.run_id "
                         "WHERE er.experiment_id = ? ORDER BY er.idx", [xid])
        assert [(x["idx"], x["run_id"]) for x in links] == \
            [(e["index"], r) for e in record["grid"] for r in e["run_ids"]]
        assert len(links) == 3 and all(x["status"] == "converged" for x in links)
        assert grid_rows(pg, xid) == grid_rows(pg, local["experiment_id"][0])
        # the client's own store has the same experiment, from what came back
        lite = store.connect()
        try:
            assert grid_rows(lite, xid) == grid_rows(pg, xid)
            assert [p["attempts"] for p in lite.dicts(
                "SELECT attempts FROM experiment_points ORDER BY idx")] == [1, 1, 1, 1]
        finally:
            lite.close()
    finally:
        pg.close()
