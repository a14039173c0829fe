"""The run store on SQLite: recorded runs imported, live runs written as events arrive,
partial runs readable, migrations, experiments, export, and no secrets.

PostgreSQL and the Grafana panels are tested in tests/integration/ (a real server)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import antrieb
from antrieb import store
from antrieb.errors import TaskError, UnknownNameError
from antrieb.examples import load_example, names

from ..converge.fakes import LoadBalancerWorld, host_assertions_pass

DATA = Path(__file__).parent / "data"
EXAMPLE_RUNS = [load_example(n).reference_run() for n in names()
                if load_example(n).reference_run() is not None]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANTRIEB_STORE", raising=False)


@pytest.fixture
def fake_testinfra(monkeypatch):
    from antrieb.converge import checks

    monkeypatch.setattr(checks, "_assert_host", host_assertions_pass)
    monkeypatch.setattr(checks, "_sleep", lambda seconds: None)


def _counts(db: store.Database) -> dict[str, int]:
    return {t: db.count(t) for t in store.TABLES}


def test_recorded_runs_import_once_whatever_the_number_of_imports():
    assert len(EXAMPLE_RUNS) >= 4
    ids = [store.ingest_run(d) for d in EXAMPLE_RUNS]
    db = store.connect()
    first = _counts(db)
    for d in EXAMPLE_RUNS:
        store.ingest_run(d)
    assert _counts(db) == first
    assert first["runs"] == len(ids) and first["iterations"] >= 3 * len(ids)
    for t in ("steps", "commands", "checks", "failures", "recovery_decisions", "llm_calls",
              "troubleshoot_turns", "logs"):
        assert first[t] > 0, t
    # each run's rows match its record: iterations, decisions, tokens
    for folder in EXAMPLE_RUNS:
        record = json.loads((folder / "run.json").read_text())
        result = record["result"]
        run = store.get_run(record["run_id"])
        assert run["status"] == result["status"] == "converged"
        assert len(run["iterations"]) == len(result["iterations"])
        assert [d["path"] for d in run["decisions"]] == [
            it["recovery"]["path"] for it in result["iterations"] if it["recovery"]]
        assert run["prompt_tokens"] == result["cost"]["prompt_tokens"]
        assert run["final_artifacts"] == (result["final"].get("scripts")
                                         or {"playbook": result["final"].get("playbook")})
        explained = [it for it in run["iterations"] if it["explanation"]]
        assert len(explained) == sum(1 for it in result["iterations"] if it["explanation"])
    db.close()


def test_runs_dataframe():
    for d in EXAMPLE_RUNS:
        store.ingest_run(d)
    df = antrieb.runs()
    assert list(df["created"]) == sorted(df["created"], reverse=True)
    assert set(df["status"]) == {"converged"}
    row = df[df.task_name == "haproxy-nginx"].iloc[0]
    # the example's model is a hand-written recording: its usage was never measured
    assert row.iterations == 3 and row.paths == "troubleshoot" and row.tokens != row.tokens
    assert {"run_id", "reason", "total_s", "in_vm_s", "created_at"} <= set(df.columns)
    assert len(antrieb.runs(status="failed")) == 0


def _live_run(meta: dict | None = None):
    from antrieb.converge import Converger

    example = load_example("nginx-lb")
    return Converger(example.task, provider=example.provider(), meta=meta or {},
                     cluster_factory=LoadBalancerWorld().factory()).run()


def test_a_live_run_is_written_as_it_goes_and_matches_its_import(fake_testinfra, tmp_path):
    seen_while_running: list[int] = []
    from antrieb import events

    def peek(event):
        if isinstance(event, events.CheckFinished):  # mid-run: a second reader looks
            conn = sqlite3.connect(store.default_url())
            seen_while_running.append(conn.execute("SELECT COUNT(*) FROM checks").fetchone()[0])
            conn.close()

    with events.subscribed(peek):
        result = _live_run()
    assert result.status == "converged"
    assert seen_while_running and seen_while_running[-1] >= 1
    db = store.connect()
    live = _counts(db)
    run = store.get_run(result.run_id)
    assert run["status"] == "converged" and run["iteration_count"] == 3
    assert [d["path"] for d in run["decisions"]] == result.paths()
    assert run["vm_seconds"] == pytest.approx(result.cost.vm_seconds)
    # importing the run's record into a fresh store gives the very same rows
    other = store.connect(str(tmp_path / "other.sqlite"))
    store.ingest_run(result.record_dir, db=other)
    assert _counts(other) == live
    for table in ("steps", "checks", "logs", "llm_calls"):
        assert sorted(r[0] for r in db.rows(f"SELECT event_id FROM {table}")[1]) == sorted(
            r[0] for r in other.rows(f"SELECT event_id FROM {table}")[1])
    store.ingest_run(result.record_dir)  # and into the live store: nothing new
    assert _counts(db) == live


def test_a_crashed_run_is_readable(tmp_path):
    """A run whose process died: run.json says running, events.jsonl ends mid-line."""
    src = EXAMPLE_RUNS[0]
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    record = json.loads((src / "run.json").read_text())
    record.update(state="running", result=None)
    (crashed / "run.json").write_text(json.dumps(record))
    lines = (src / "events.jsonl").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"check_finished"' in line)
    (crashed / "events.jsonl").write_text("\n".join(lines[:cut + 1]) + "\n" + lines[cut + 1][:40])
    store.ingest_run(crashed)
    run = store.get_run(record["run_id"])
    assert run["status"] == "running" and run["reason"] is None
    assert run["checks"] and run["steps"] and run["iterations"]
    assert antrieb.runs().iloc[0]["status"] == "running"


def test_output_with_unicode_line_separators_imports_whole(tmp_path):
    """JSON keeps U+0085/U+2028 raw inside strings; an event line must not break there."""
    src = EXAMPLE_RUNS[0]
    run = tmp_path / "odd"
    shutil.copytree(src, run)
    lines = (run / "events.jsonl").read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if '"check_finished"' in line)
    event = json.loads(lines[i])
    event["output_tail"] = "before\x85middle\u2028after"
    lines[i] = json.dumps(event, ensure_ascii=False)
    (run / "events.jsonl").write_text("\n".join(lines))
    run_id = store.ingest_run(run)
    outputs = list(store.table("checks", run_id=run_id)["output"])
    assert "before\x85middle\u2028after" in outputs
    assert len(outputs) == sum('"check_finished"' in line for line in lines)


def test_the_live_writer_never_fails_a_run(fake_testinfra, monkeypatch, capsys):
    monkeypatch.setenv("ANTRIEB_STORE", "/proc/no-such-dir/store.sqlite")
    result = _live_run()
    assert result.status == "converged"
    assert "run store disabled" in capsys.readouterr().err
    monkeypatch.setenv("ANTRIEB_STORE", "off")
    assert _live_run().status == "converged"


def test_migrations_are_versioned_and_applied_once(tmp_path):
    path = tmp_path / "s.sqlite"
    db = store.connect(str(path))
    assert db.version() == store.LATEST
    assert db.migrate() == []  # nothing left to apply
    rows = db.rows("SELECT version, description FROM schema_version")[1]
    assert [r[0] for r in rows] == [m.version for m in store.MIGRATIONS]
    db.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (store.LATEST + 1, "future", 0))
    db.close()
    with pytest.raises(store.StoreError, match="upgrade antrieb"):
        store.connect(str(path))


def test_an_older_store_is_migrated_and_keeps_its_rows(tmp_path, monkeypatch):
    from antrieb.store import db as db_mod

    path = str(tmp_path / "old.sqlite")
    with monkeypatch.context() as m:  # an antrieb that knew only the first migration
        m.setattr(db_mod, "MIGRATIONS", store.MIGRATIONS[:1])
        m.setattr(db_mod, "LATEST", 1)
        old = store.connect(path)
        store.ingest_run(EXAMPLE_RUNS[0], db=old)
        before = {t: old.count(t) for t in store.TABLES if t != "residue"}  # not in v1
        assert old.version() == 1
        assert "mode" not in old.rows("SELECT * FROM experiment_points")[0]
        old.close()
    new = store.connect(path)
    assert new.version() == store.LATEST >= 2
    assert _counts(new) == {**before, "residue": 0}
    assert "mode" in new.rows("SELECT * FROM experiment_points")[0]


def test_no_column_can_hold_a_prompt_or_a_key(fake_testinfra, monkeypatch):
    canary = "sk-canary-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    result = _live_run(meta={"example": f"nginx-lb {canary}"})  # a key quoted by mistake
    db = store.connect()
    for table in store.TABLES:
        names_, rows = db.rows(f"SELECT * FROM {table}")
        assert not {"api_key", "key", "messages", "prompt", "response"} & set(names_)
        assert canary not in json.dumps(rows, default=str), table
    assert store.get_run(result.run_id)["example"] == "nginx-lb [redacted]"
    names_, _ = db.rows("SELECT * FROM llm_calls")
    assert set(names_) == {"event_id", "run_id", "iteration", "at", "call_id", "purpose",
                           "provider", "model", "attempt", "ok", "prompt_tokens",
                           "completion_tokens", "seconds"}


def _runs_folder_with_examples(*names_: str) -> None:
    from antrieb.converge.record import runs_dir

    for d in EXAMPLE_RUNS:
        if d.parent.name in names_:
            run_id = json.loads((d / "run.json").read_text())["run_id"]
            shutil.copytree(d, runs_dir() / run_id)


def test_experiments_import_with_their_parameters_and_runs():
    # grid points 1 and 2 ran live (their runs are in the runs folder); point 0 showed
    # a recorded run, found through its run_dirs entry
    _runs_folder_with_examples("haproxy-nginx", "firewall")
    store.ingest_experiment(DATA / "experiment.json")
    db = store.connect()
    first = _counts(db)
    store.ingest_experiment(DATA / "experiment.json")
    assert _counts(db) == first
    assert first["experiments"] == 1 and first["experiment_points"] == 3
    assert first["experiment_parameters"] == 9 and first["experiment_runs"] == 3
    assert first["runs"] == 3  # the runs it names were imported from the runs folder
    points = db.dicts("SELECT idx, status, error, label, mode FROM experiment_points "
                      "ORDER BY idx")
    assert [p["mode"] for p in points] == ["recorded", "live", "live"]
    assert points[0]["label"] == "example=nginx-lb, max_iterations=4, tool=shell"
    assert points[2]["status"] == "failed" and "AssertionError" in points[2]["error"]
    nums = db.dicts("SELECT idx, value_num FROM experiment_parameters WHERE name = ? "
                    "ORDER BY idx", ["max_iterations"])
    assert [r["value_num"] for r in nums] == [4.0, 8.0, 1.0]
    runs = antrieb.runs()
    assert set(runs["experiment_id"]) == {"e20261130-070000-lbgrid"}
    assert sorted(runs["experiment_index"]) == [0, 1, 2]


def _dask_record(tmp_path: Path) -> tuple[dict, Path]:
    """The test experiment as run on Dask: point 0 retried on a second worker."""
    data = json.loads((DATA / "experiment.json").read_text())
    for point in data["grid"]:
        point["run_dirs"] = {r: str((DATA / d).resolve())
                             for r, d in point.get("run_dirs", {}).items()}
        point.update(worker="tcp://10.0.0.3:40001", host="hv3",
                     attempts=[{"worker": "tcp://10.0.0.3:40001", "host": "hv3"}])
    data["grid"][0]["attempts"].insert(0, {"worker": "tcp://10.0.0.2:40001", "host": "hv2"})
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(data))
    return data, path


def test_a_dask_point_is_written_by_its_worker_and_again_by_the_record(tmp_path):
    data, path = _dask_record(tmp_path)
    experiment = {"experiment_id": data["experiment_id"], "notebook": data["notebook"],
                  "created": data["created"], "points": 3}
    point = data["grid"][0]
    running = {k: point[k] for k in ("index", "parameters", "output", "started", "worker",
                                     "host")}
    store.ingest_point(experiment, {**running, "status": "running", "mode": "none"})
    db = store.connect()
    row = db.dicts("SELECT status, worker, host, attempts FROM experiment_points")
    assert row == [{"status": "running", "worker": "tcp://10.0.0.3:40001", "host": "hv3",
                    "attempts": None}]
    store.ingest_point(experiment, {k: v for k, v in point.items() if k != "attempts"})
    assert db.dicts("SELECT status, mode FROM experiment_points") == [
        {"status": "ok", "mode": "recorded"}]
    assert db.count("runs") == 1 and db.count("experiment_runs") == 1
    assert db.dicts("SELECT path, points FROM experiments") == [{"path": None, "points": 3}]
    store.ingest_experiment(path)  # the client, once every point is back
    assert _counts(db)["experiment_points"] == 3
    assert db.dicts("SELECT path FROM experiments") == [{"path": str(path.resolve())}]
    rows = db.dicts("SELECT idx, worker, host, attempts FROM experiment_points ORDER BY idx")
    assert [(r["host"], r["attempts"]) for r in rows] == [("hv3", 2), ("hv3", 1), ("hv3", 1)]


def test_a_dask_record_loads_into_a_store_without_the_worker_columns(tmp_path, monkeypatch):
    from antrieb.store import db as db_mod

    _, path = _dask_record(tmp_path)
    target = str(tmp_path / "v4.sqlite")
    with monkeypatch.context() as m:  # an antrieb from before the worker columns
        m.setattr(db_mod, "MIGRATIONS", store.MIGRATIONS[:4])
        m.setattr(db_mod, "LATEST", 4)
        old = store.connect(target)
        store.ingest_experiment(path, db=old)
        assert "worker" not in old.rows("SELECT * FROM experiment_points")[0]
        assert old.count("experiment_points") == 3
        old.close()
    new = store.connect(target)
    assert new.version() == store.LATEST >= 5
    assert {r["worker"] for r in new.dicts("SELECT worker FROM experiment_points")} == {None}
    store.ingest_experiment(path, db=new)
    assert {r["host"] for r in new.dicts("SELECT host FROM experiment_points")} == {"hv3"}


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(TaskError, match="cannot read"):
        store.ingest_experiment(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(TaskError, match="not JSON"):
        store.ingest_experiment(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"grid": []}))
    with pytest.raises(TaskError, match="no experiment_id"):
        store.ingest_experiment(tmp_path / "y.json")
    with pytest.raises(TaskError, match="cannot read"):
        store.ingest_run(tmp_path)
    with pytest.raises(UnknownNameError):
        store.get_run("r-nope")
    with pytest.raises(store.StoreError, match="no table"):
        store.table("users")
    assert store.connect().count("runs") == 0  # nothing half-written


def test_export_copies_without_duplicates(tmp_path):
    for d in EXAMPLE_RUNS:
        store.ingest_run(d)
    store.ingest_experiment(DATA / "experiment.json")
    target = str(tmp_path / "copy.sqlite")
    once = store.export(to=target)
    twice = store.export(to=target)
    assert once == twice == _counts(store.connect())
    with pytest.raises(TaskError, match="reads from"):
        store.export(to=store.default_url())


class _LeavesAKey(LoadBalancerWorld):
    def command(self, node, command):
        from antrieb.converge.proof import SCAN

        if command == SCAN and node.name == "lb":
            return 0, "file\t/tmp/lb.key\nprivate_key\t/tmp/lb.key\npackage\tvim\n", ""
        return super().command(node, command)


def test_the_proof_gates_and_residue_are_rows(fake_testinfra):
    from antrieb.converge import Converger

    example = load_example("nginx-lb")
    result = Converger(example.task, provider=example.provider(),
                       cluster_factory=_LeavesAKey().factory()).run()
    assert result.status == "converged", result.reason
    db = store.connect()
    verify = db.dicts("SELECT fresh_server, idempotent, reboot FROM iterations "
                      "WHERE run_id = ? AND phase = 'verify'", (result.run_id,))
    assert verify == [{"fresh_server": 1, "idempotent": 1, "reboot": "passed"}]
    rows = db.dicts("SELECT node, kind, item FROM residue WHERE run_id = ? ORDER BY kind",
                    (result.run_id,))
    assert rows == [{"node": "lb", "kind": "file", "item": "/tmp/lb.key"},
                    {"node": "lb", "kind": "package", "item": "vim"},
                    {"node": "lb", "kind": "private_key", "item": "/tmp/lb.key"}]
    after = db.dicts("SELECT COUNT(*) AS n FROM checks WHERE run_id = ? AND after_reboot = 1",
                     (result.run_id,))
    assert after == [{"n": len(example.task.checks)}]
    detail = store.get_run(result.run_id)  # what MCP get_run returns
    assert [r["item"] for r in detail["residue"]] == ["/tmp/lb.key", "vim", "/tmp/lb.key"]
    assert [i["reboot"] for i in detail["iterations"] if i["phase"] == "verify"] == ["passed"]
