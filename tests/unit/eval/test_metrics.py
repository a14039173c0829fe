"""pass@k and the figures per task and per model: pure functions of the run rows."""

from __future__ import annotations

import itertools

import pytest

from antrieb.converge.results import Cost, Diagnosis, Iteration, Proof, Recovery, RunResult
from antrieb.eval import pass_at_k, per_llm, per_task, run_row
from antrieb.eval.metrics import default_ks

SHELL = {"tool": "shell", "scripts": {"web": "#!/bin/bash\n"}}


def brute_force(n: int, c: int, k: int) -> float:
    """The share of k-subsets of n runs (c of them converged) with a converged run."""
    runs = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(runs[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(n, c, k) for n in range(1, 7)
                                           for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k))


def test_pass_at_k_by_hand_and_for_large_n():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(200, 0, 10) == 0.0 and pass_at_k(200, 200, 1) == 1.0
    assert 0 < pass_at_k(1000, 3, 100) < 1  # no overflow of C(1000, 100)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_default_ks():
    assert default_ks(1) == [1] and default_ks(5) == [1, 5]


def _result(status: str, classes: list[str], tokens: tuple[int, int] | None = (100, 20),
            converged_after: int = 0) -> RunResult:
    its = []
    for i, cls in enumerate(classes, 1):
        its.append(Iteration(number=i, artifacts=SHELL, diagnosis=Diagnosis(failure_class=cls),
                             recovery=Recovery(path="retry", reason="logs name it",
                                               failure_class=cls)))
    for _ in range(converged_after):
        its.append(Iteration(number=len(its) + 1, artifacts=SHELL, passed=True))
    cost = Cost(vm_seconds=30.0)
    if tokens is None:
        cost.add_call(0, 0, measured=False)
    else:
        cost.add_call(*tokens)
    proof = Proof(fresh_server=True, idempotent=True, reboot="passed") if \
        status == "converged" else None
    return RunResult(run_id=f"r{len(classes)}{status}", task_name="t", status=status,
                     reason="why", iterations=its, cost=cost, proof=proof,
                     timings={"total_s": 100.0, "llm_s": 2.5, "in_vm_s": 60.0})


def test_a_run_row_has_every_figure():
    row = run_row(_result("converged", ["config_syntax"], converged_after=2), llm="m",
                  task="nginx-lb", repeat=0, model="gpt")
    assert row["converged"] and row["iterations"] == 3 and row["attempts"] == 3
    assert row["paths"] == ["retry"] and row["failure_classes"] == ["config_syntax"]
    assert (row["tokens"], row["prompt_tokens"], row["completion_tokens"]) == (120, 100, 20)
    assert (row["llm_s"], row["in_vm_s"], row["vm_s"], row["wall_s"]) == (2.5, 60.0, 30.0, 100.0)
    assert (row["fresh_server"], row["idempotent"], row["reboot"], row["residue"]) == (
        True, True, "passed", 0)
    unmeasured = run_row(_result("failed", [], tokens=None), llm="oracle", task="t", repeat=0)
    assert unmeasured["tokens"] is None and unmeasured["reboot"] is None


def _rows() -> list[dict]:
    a = [run_row(_result("converged", [], converged_after=2), llm="a", task="t1", repeat=0),
         run_row(_result("converged", ["permission"], converged_after=2), llm="a", task="t1",
                 repeat=1),
         run_row(_result("budget_exhausted", ["permission", "permission"]), llm="a",
                 task="t2", repeat=0),
         run_row(_result("converged", [], converged_after=2), llm="a", task="t2", repeat=1)]
    b = [run_row(_result("failed", ["connectivity"], tokens=None), llm="b", task=t, repeat=r)
         for t in ("t1", "t2") for r in (0, 1)]
    stopped = run_row(_result("stopped", ["timeout"]), llm="a", task="t2", repeat=2)
    return [*a, *b, stopped]


def test_per_task_figures():
    rows = {(r["llm"], r["task"]): r for r in per_task(_rows(), ks=[1, 2])}
    t1, t2 = rows[("a", "t1")], rows[("a", "t2")]
    assert (t1["runs"], t1["converged"], t1["pass@1"], t1["pass@2"]) == (2, 2, 1.0, 1.0)
    assert (t2["runs"], t2["converged"], t2["pass@1"], t2["pass@2"]) == (2, 1, 0.5, 1.0)
    assert t1["mean_iterations"] == 2.5 and t2["mean_iterations"] == 2.0
    assert t2["failure_classes"] == {"permission": 2}  # the stopped run is not scored
    assert t1["tokens"] == 240 and t1["vm_s"] == 60.0 and t1["wall_s"] == 200.0
    b = rows[("b", "t1")]
    assert b["pass@1"] == 0.0 and b["tokens"] is None and b["mean_iterations"] is None


def test_per_llm_weighs_each_task_the_same():
    rows = {r["llm"]: r for r in per_llm(_rows(), ks=[1, 2])}
    a, b = rows["a"], rows["b"]
    assert (a["tasks"], a["runs"], a["converged"]) == (2, 4, 3)
    assert a["pass@1"] == 0.75 and a["pass@2"] == 1.0
    assert a["mean_iterations"] == pytest.approx(2.333, abs=1e-3)
    assert a["failure_classes"] == {"permission": 3}
    assert (b["pass@1"], b["converged"], b["failure_classes"]) == (0.0, 0, {"connectivity": 4})


def test_a_k_beyond_the_runs_is_left_out():
    rows = per_task(_rows(), ks=[1, 5])
    assert all("pass@5" not in r for r in rows)
    assert all("pass@5" not in r for r in per_llm(_rows(), ks=[1, 5]))
