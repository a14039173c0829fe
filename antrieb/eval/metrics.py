"""The figures of an evaluation: one row per run, then per task and per model.

- :func:`run_row`: what one run did (converged, iterations, recovery paths and failure
  classes, tokens, LLM seconds, VM seconds, wall time, the proof's gates);
- :func:`pass_at_k`: the unbiased estimator of pass@k (Chen et al., 2021: the chance that
  at least one of k runs drawn from the n made converges, given c of them did);
- :func:`per_task` and :func:`per_llm`: pass@1 and pass@k over the repeats, mean
  iterations to converge, and what it cost.

Runs that did not finish (``stopped``: Ctrl-C) are left out of the figures: they were
neither a success nor a failure of the model.

Example::

    pass_at_k(n=5, c=2, k=1)   # 0.4
    pass_at_k(n=5, c=2, k=3)   # 0.9
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from antrieb.converge.results import RunResult


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), computed as a product so large n does not overflow."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def run_row(result: RunResult, *, llm: str, task: str, repeat: int,
            model: str | None = None) -> dict[str, Any]:
    """One run's figures. ``tokens`` is None when no call's usage was measured (an oracle,
    a hand-written recording): not measured is not zero."""
    its = result.iterations
    t = result.timings
    gates = result.proof
    return {
        "llm": llm, "model": model, "task": task, "repeat": repeat,
        "run_id": result.run_id, "status": result.status, "converged": result.converged,
        "reason": result.reason,
        "iterations": len(its),  # fresh clusters, the proof's included
        "attempts": len(result.attempts()),
        "paths": result.paths(),
        "failure_classes": [it.diagnosis.failure_class for it in its if it.diagnosis],
        "tokens": result.cost.tokens,
        "prompt_tokens": result.cost.prompt_tokens,
        "completion_tokens": result.cost.completion_tokens,
        "llm_calls": result.cost.llm_calls,
        "llm_s": round(t.get("llm_s", 0.0), 3),
        "in_vm_s": round(t.get("in_vm_s", 0.0), 2),  # commands and checks running in VMs
        "vm_s": round(result.cost.vm_seconds, 1),  # node-seconds the clusters were up
        "wall_s": round(t.get("total_s", 0.0), 2),
        "fresh_server": gates.fresh_server if gates else None,
        "idempotent": gates.idempotent if gates else None,
        "reboot": gates.reboot if gates else None,
        "residue": len(gates.residue) if gates else None,
        "record_dir": result.record_dir,
    }


def _scored(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") != "stopped"]


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _tokens(rows: Sequence[dict[str, Any]]) -> int | None:
    measured = [r["tokens"] for r in rows if r.get("tokens") is not None]
    return sum(measured) if measured else None


def _group(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def _costs(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"tokens": _tokens(rows),
            "llm_s": round(sum(r["llm_s"] for r in rows), 2),
            "vm_s": round(sum(r["vm_s"] for r in rows), 1),
            "wall_s": round(sum(r["wall_s"] for r in rows), 1)}


def per_task(rows: Iterable[dict[str, Any]], ks: Sequence[int] = (1,)) -> list[dict[str, Any]]:
    """One row per (llm, task): runs, converged, pass@k for each k the runs allow, mean
    iterations to converge (of the converged runs), the failure classes seen, costs."""
    out = []
    for (llm, task), group in sorted(_group(_scored(rows), "llm", "task").items()):
        n, c = len(group), sum(bool(r["converged"]) for r in group)
        classes = Counter(cls for r in group for cls in r["failure_classes"])
        out.append({
            "llm": llm, "task": task, "runs": n, "converged": c,
            **{f"pass@{k}": round(pass_at_k(n, c, k), 4) for k in ks if k <= n},
            "mean_iterations": _mean([r["iterations"] for r in group if r["converged"]]),
            "failure_classes": dict(classes.most_common()),
            **_costs(group),
        })
    return out


def per_llm(rows: Iterable[dict[str, Any]], ks: Sequence[int] = (1,)) -> list[dict[str, Any]]:
    """One row per model: pass@k averaged over its tasks (each task weighs the same,
    however many repeats it had), mean iterations to converge, totals."""
    rows = _scored(rows)
    tasks = per_task(rows, ks)
    out = []
    for (llm,), group in sorted(_group(rows, "llm").items()):
        mine = [t for t in tasks if t["llm"] == llm]
        figures: dict[str, Any] = {"llm": llm, "tasks": len(mine), "runs": len(group),
                                   "converged": sum(bool(r["converged"]) for r in group)}
        for k in ks:
            scores = [t[f"pass@{k}"] for t in mine if f"pass@{k}" in t]
            if scores:
                figures[f"pass@{k}"] = round(sum(scores) / len(scores), 4)
        figures["mean_iterations"] = _mean([r["iterations"] for r in group if r["converged"]])
        classes = Counter(cls for r in group for cls in r["failure_classes"])
        figures["failure_classes"] = dict(classes.most_common())
        out.append({**figures, **_costs(group)})
    return out


def default_ks(repeats: int) -> list[int]:
    """pass@1 always; pass@k for k = the repeats too, when there is more than one."""
    return sorted({1, repeats}) if repeats > 1 else [1]
