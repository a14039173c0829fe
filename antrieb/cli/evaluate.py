"""CLI of the evaluation harness: ``antrieb eval``.

A thin call into :func:`antrieb.eval.run_eval`. Progress (one line a finished run) goes
to stderr; ``--json`` prints the result on stdout: ``overall`` (one row per model:
pass@1, pass@k, mean iterations, failure classes, tokens, LLM s, VM s, wall),
``per_task`` and ``runs``. Exit codes: 0 the evaluation ran (whatever the scores), 2 bad
input, 130 interrupted (the partial result is printed and recorded all the same).

Example::

    antrieb eval --llm oracle --tasks nginx-lb,haproxy-nginx --json
    antrieb eval --llm oracle --llm near-miss --workers 2 --json   # a local Dask cluster
    antrieb eval --llm openai:gpt-4o --repeats 3 --dask tcp://head:8786
    antrieb eval --llm openai:gpt-4o --llm openai:gpt-4o-mini --repeats 3 \\
        --budget max_iterations=4 --budget max_wall_s=1800
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, err, out, print_json


def _budgets(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (Budgets fields); the values read as YAML (numbers stay numbers)."""
    budgets: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            err.print(f"[red]error:[/red] --budget takes KEY=VALUE (e.g. max_iterations=4), "
                      f"got {pair!r}")
            raise typer.Exit(2)
        budgets[key.strip()] = yaml.safe_load(value)
    return budgets


def _show(result: Any) -> None:
    table = Table("model", "tasks", "runs", "converged", "pass@1", "pass@k",
                  "mean iterations", "tokens", "LLM s", "VM s", "wall s",
                  title=f"evaluation {result.experiment_id}"
                  + (" (interrupted)" if result.interrupted else ""))
    k = max(result.ks)
    for row in result.to_dict()["overall"]:
        table.add_row(row["llm"], str(row["tasks"]), str(row["runs"]), str(row["converged"]),
                      str(row.get("pass@1", "-")), str(row.get(f"pass@{k}", "-")),
                      str(row["mean_iterations"] if row["mean_iterations"] is not None
                          else "-"),
                      "not measured" if row["tokens"] is None else str(row["tokens"]),
                      str(row["llm_s"]), str(row["vm_s"]), str(row["wall_s"]))
    out.print(table)
    for row in result.to_dict()["per_task"]:
        classes = ", ".join(f"{c} {n}" for c, n in row["failure_classes"].items()) or "-"
        out.print(f"  {row['llm']} {row['task']}: pass@1 {row.get('pass@1')}, "
                  f"{row['converged']}/{row['runs']} converged, failure classes: {classes}",
                  markup=False)
    err.print(f"record: antrieb experiment show {result.experiment_id}")


@app.command("eval")
def eval_command(
    llm: Annotated[list[str], typer.Option(
        "--llm", help="A model to evaluate (repeatable): openai, openai:MODEL, replay:PATH, "
        "or oracle / near-miss (each task's reference / near miss).")],
    tasks: Annotated[str | None, typer.Option(
        help="Comma-separated task names (default: the whole catalogue; antrieb tasks list)."
    )] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per model and task.")] = 1,
    budget: Annotated[list[str] | None, typer.Option(
        "--budget", help="A run budget as KEY=VALUE (repeatable): max_iterations, "
        "max_wall_s, max_tokens, troubleshoot_turns, step_timeout_s.")] = None,
    slots: Annotated[int | None, typer.Option(
        min=1, help="Runs at once (default: this host's VM slots).")] = None,
    dask: Annotated[str | None, typer.Option(
        "--dask", metavar="ADDRESS", help="Run each run as a task on this Dask scheduler "
        "(tcp://HOST:8786); its workers are the hypervisor hosts.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Run on a local Dask cluster of N worker processes.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run models over catalogue tasks on fresh clusters; print pass@1, pass@k, mean
    iterations and cost per model and per task. Boots VMs.

    Example: antrieb eval --llm oracle --tasks nginx-lb,haproxy-nginx --json
    """
    from antrieb.cli.experiment import dask_client
    from antrieb.eval import run_eval

    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    if (dask or workers) and slots:
        err.print("[red]error:[/red] --slots is for this host; with --dask/--workers each "
                  "worker's vm_slots say how many runs it takes")
        raise typer.Exit(2)
    with dask_client(dask, workers) as client:
        result = call(run_eval, llm, names, repeats=repeats, budgets=_budgets(budget or []),
                      slots=slots, log=err.print, client=client)
    if as_json:
        print_json(result.to_dict())
    else:
        _show(result)
    if result.interrupted:
        raise typer.Exit(130)
