"""The evaluation harness on real VMs against known answers: the oracle (each task's
reference) scores pass@1 1.0 on two tasks, the near miss 0.0 with its failure classes
recorded; every run is recorded with its conversation and the evaluation is an
experiment in the store. The tasks are the two small single-host ones of
test_tasks_verify.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from antrieb.llm import Recording
from antrieb.notebook.experiments import load_experiment
from antrieb.store import table

# slow tier until the catalogue is verified whole (issue 20): ~140 s under TCG
pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(3600)]

TASKS = ["python-unit", "nginx-static"]


def test_oracle_scores_one_and_near_miss_zero(debian12):
    from antrieb.eval import run_eval

    lines: list[str] = []
    ev = run_eval(["oracle", "near-miss"], TASKS, repeats=1,
                  budgets={"max_iterations": 2}, log=lines.append)
    print("\n".join(lines))
    print(ev.per_task.to_string())
    assert not ev.interrupted and len(ev.rows) == 4
    overall = ev.per_llm.set_index("llm")
    assert overall.loc["oracle", "pass@1"] == 1.0, ev.runs[["task", "status", "reason"]]
    assert overall.loc["near-miss", "pass@1"] == 0.0
    runs = ev.runs.set_index(["llm", "task"])
    for task in TASKS:
        oracle = runs.loc[("oracle", task)]
        assert oracle.status == "converged" and oracle.iterations == 2, oracle.reason
        assert (oracle.fresh_server, oracle.idempotent, oracle.reboot) == (True, True, "passed")
        assert oracle.failure_classes == [] and oracle.vm_s > 0 and oracle.wall_s > 0
        near = runs.loc[("near-miss", task)]
        assert near.status == "budget_exhausted" and near.iterations == 2, near.reason
        assert len(near.failure_classes) == 2 and "unknown" not in near.failure_classes
        assert "check_mismatch" in near.failure_classes, near.failure_classes
        assert pd.isna(near.reboot)  # never got to a proof (None in a DataFrame: NaN)
    for row in ev.rows:  # every run is recorded with its conversation, replayable offline
        recording = Recording.load(Path(row["record_dir"]) / "llm.jsonl")
        assert recording.exchanges and recording.exchanges[0].purpose == "design"
        assert recording.provider == row["llm"]
    experiment = load_experiment(ev.experiment_id)
    assert experiment["kind"] == "eval" and [e["status"] for e in experiment["grid"]] == [
        "ok"] * 4
    points = table("experiment_points")
    assert set(points[points.experiment_id == ev.experiment_id].idx) == {0, 1, 2, 3}
