"""CLI of the task catalogue: ``antrieb tasks list|show|verify``.

Thin calls into :mod:`antrieb.tasks`. ``verify`` boots VMs (three fresh clusters a task)
and appends each verdict to the task's record in the cache. Exit codes: 0 every task
verified, 1 a task failed (its reference, its near miss, or a cluster), 2 bad input or a
refused task, 130 interrupted.

Example::

    antrieb tasks list --json
    antrieb tasks verify nginx-static python-unit --json
    antrieb tasks verify                 # the whole catalogue (an hour or more under TCG)
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, err, out, print_json

tasks_app = typer.Typer(help="The task catalogue: tasks with proven checks, a reference "
                        "and a near miss each.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


def _row(spec: Any) -> dict[str, Any]:
    from antrieb.tasks import last_verification

    last = last_verification(spec.name)
    return {**spec.summary(), "last_verified": last.brief() if last else None}


@tasks_app.command("list")
def tasks_list(as_json: JsonOpt = False) -> None:
    """The catalogue, with when each task was last verified. Example: antrieb tasks list"""
    from antrieb.tasks import list_tasks

    rows = [_row(spec) for spec in call(list_tasks)]
    if as_json:
        print_json(rows)
        return
    table = Table("category", "tool", "nodes", "checks", "verified")
    table.add_column("name", no_wrap=True)  # whole: the name to copy
    for r in rows:
        last = r["last_verified"]
        seen = f"{last['result']} {last['verified_at'][:10]}" if last else "never"
        table.add_row(r["category"], r["tool"], ",".join(r["nodes"]), str(r["checks"]),
                      seen, r["name"])
    out.print(table)


@tasks_app.command("show")
def tasks_show(name: str, as_json: JsonOpt = False) -> None:
    """One task: request, checks, the reference and the near miss. Example: antrieb tasks
    show nginx-static"""
    from antrieb.tasks import load_task

    spec = call(load_task, name)
    if as_json:
        print_json({**_row(spec), "task": spec.task.model_dump(mode="json"),
                    "reference": spec.reference.model_dump(mode="json"),
                    "near_miss_artifacts": spec.near_miss.model_dump(mode="json")})
        return
    out.print(f"[bold]{spec.name}[/bold]: {escape(spec.title)} ({spec.category})")
    out.print(spec.task.request.strip(), markup=False)
    for check in spec.task.checks:
        what = check.command if check.host is None else check.host.model_dump_json()
        out.print(f"  check on {check.node}: {check.name}: {what}", markup=False)
    for label, artifacts in (("reference", spec.reference), ("near miss", spec.near_miss)):
        for part, text in artifacts.texts().items():
            out.print(f"[bold]--- {label}: {part} ---[/bold]")
            out.print(text, markup=False, highlight=False)
    out.print(f"near miss: {spec.near_miss_why}", markup=False)


def _trial_line(trial: Any) -> None:
    what = {"none": "untouched nodes", "reference": "reference", "near_miss": "near miss"}
    where = "passes" if trial.passed else f"fails at {trial.failed_at or 'setup'}"
    extra = f": {', '.join(trial.failed_checks()[:3])}" if trial.failed_at == "checks" else ""
    err.print(f"  {what[trial.artifacts]}: {where}{escape(extra)} ({trial.seconds:.0f}s)"
              + (f" [red]{escape(trial.error)}[/red]" if trial.error else ""))


@tasks_app.command("verify")
def tasks_verify(
    names: Annotated[list[str] | None, typer.Argument(
        help="Task names or task files (default: the whole catalogue).")] = None,
    proof: Annotated[bool, typer.Option(
        "--proof/--no-proof", help="The reference must also pass idempotence and the "
        "reboot, as a converged run must.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Prove each task on fresh clusters: the checks fail on untouched nodes, the
    reference passes them, the near miss does not. Boots VMs."""
    from antrieb.tasks import load_task, verify_task
    from antrieb.tasks import names as catalogue

    specs = [call(load_task, n) for n in (names or catalogue())]
    started = time.monotonic()
    verdicts = []
    for i, spec in enumerate(specs, 1):
        err.print(f"[bold]{spec.name}[/bold] ({i}/{len(specs)}): {', '.join(spec.nodes)}")
        v = call(verify_task, spec, proof=proof, on_trial=_trial_line)
        colour = {"passed": "green", "refused": "yellow"}.get(v.result, "red")
        err.print(f"  [{colour}]{v.result}[/{colour}] in {v.wall_s:.0f}s: {escape(v.reason)}")
        verdicts.append(v)
    summary = {"tasks": len(verdicts), "passed": sum(v.result == "passed" for v in verdicts),
               "wall_s": round(time.monotonic() - started, 1),
               "verifications": [v.brief() for v in verdicts]}
    if as_json:
        print_json(summary)
    else:
        out.print(f"{summary['passed']} of {summary['tasks']} tasks verified in "
                  f"{summary['wall_s']:.0f}s")
    results = {v.result for v in verdicts}
    if results - {"passed", "refused"}:
        raise typer.Exit(1)
    if "refused" in results:
        raise typer.Exit(2)
