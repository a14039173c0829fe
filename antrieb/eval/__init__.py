"""The evaluation harness: models over the task catalogue, scored on real VMs.

:func:`run_eval` runs each task of :mod:`antrieb.tasks` with each model (any LLM spec,
or ``oracle`` / ``near-miss``: the task's own reference and near miss) with the normal
engine on fresh clusters, ``repeats`` times; every run is recorded with its real
conversation. The result has a row per run (converged, iterations, recovery paths and
failure classes, tokens, LLM s, VM s, wall, the proof's gates) and, per task and per
model, pass@1 and pass@k over the repeats, mean iterations to converge and the cost. It
is also an experiment in the store (``antrieb experiment show ID``, Grafana's
experiments dashboard).

Example::

    from antrieb.eval import run_eval

    ev = run_eval(["openai:gpt-4o", "openai:qwen2.5-coder:7b"], ["nginx-static"], repeats=3)
    ev.per_llm[["llm", "pass@1", "pass@3", "mean_iterations", "tokens"]]
    load_eval(ev.experiment_id).runs      # read back later, from the runs' own records
"""

from __future__ import annotations

from antrieb.eval.load import eval_of_runs, list_evals, load_eval
from antrieb.eval.metrics import pass_at_k, per_llm, per_task, run_row
from antrieb.eval.runner import EvalResult, run_eval

__all__ = ["EvalResult", "eval_of_runs", "list_evals", "load_eval", "pass_at_k", "per_llm",
           "per_task", "run_eval", "run_row"]
