"""CLI commands of convergence: ``run``, ``examples``, ``runs``, ``bench converge``.

Registered on the app (:mod:`antrieb.cli.app`) when :mod:`antrieb.cli` imports it;
thin calls into the public API.
Progress goes to stderr as events arrive; ``--json`` prints one JSON document on
stdout. Exit codes (see :mod:`antrieb.cli`): 0 converged, 1 failed or budget
exhausted, 2 bad input, 130 stopped.

Example::

    antrieb examples run nginx-lb
    antrieb bench converge nginx-lb --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from antrieb import events
from antrieb.cli.app import JsonOpt, app, bench_app, call, err, out, print_json

examples_app = typer.Typer(help="Curated examples that run offline (replayed model).",
                           no_args_is_help=True)
runs_app = typer.Typer(help="Recorded convergence runs.", no_args_is_help=True)
app.add_typer(examples_app, name="examples")
app.add_typer(runs_app, name="runs")


def _progress(event: events.Event) -> None:
    """One line per convergence event on stderr."""
    e: Any = event
    if isinstance(event, events.RunStarted):
        err.print(f"[bold]run {e.run_id}[/bold]: {e.task_name} ({e.tool}, model "
                  f"{e.provider}:{e.model})")
    elif isinstance(event, events.IterationStarted):
        err.print(f"[bold]iteration {e.iteration}[/bold] ({e.phase}) on a fresh cluster: "
                  + ", ".join(f"{n}={r}" for n, r in e.nodes.items()))
    elif isinstance(event, events.StepFinished):
        mark = "[green]ok[/green]" if e.exit_status == 0 else f"[red]exit {e.exit_status}[/red]"
        extra = f", installs {e.install_s:.1f}s" if e.install_s else ""
        err.print(f"  {e.artifact} on {e.node}: {mark} ({e.seconds:.1f}s{extra})")
    elif isinstance(event, events.CheckFinished):
        mark = "[green]pass[/green]" if e.passed else "[red]FAIL[/red]"
        err.print(f"  check {escape(repr(e.check))} on {e.node}: {mark} "
                  f"{'' if e.passed else escape(e.detail)}")
    elif isinstance(event, events.FailureDiagnosed):
        err.print(f"  diagnosis: [yellow]{e.failure_class}[/yellow]: {escape(e.summary)}")
        for line in e.evidence[:4]:
            err.print(f"    [dim]{escape(line)}[/dim]")
    elif isinstance(event, events.RecoveryChosen):
        err.print(f"  path: [bold]{e.path}[/bold] ({escape(e.reason)})")
    elif isinstance(event, events.TroubleshootTurn):
        err.print(f"  {escape(f'[{e.node}] $ {e.command}')} -> exit {e.exit_status}")
    elif isinstance(event, events.Synthesized):
        err.print(f"synthesized {', '.join(e.artifacts)}: {escape(e.notes[:200])}")
    elif isinstance(event, events.ProofFinished):
        err.print("  proof: " + escape(proof_line(e.fresh_server, e.idempotent, e.reboot,
                                                  e.reboot_s, len(e.residue))))
    elif isinstance(event, events.IterationFinished):
        t = e.timings
        err.print(f"  iteration {e.iteration} {'passed' if e.passed else 'failed'} "
                  f"(up {t.get('cluster_up_s', 0):.1f}s, apply {t.get('apply_s', 0):.1f}s, "
                  f"installs {t.get('install_s', 0):.1f}s, checks {t.get('checks_s', 0):.1f}s)")
    elif isinstance(event, events.RunFinished):
        colour = "green" if e.status == "converged" else "red"
        err.print(f"[{colour}]{e.status}[/{colour}] after {e.iterations} iteration(s), "
                  f"{e.seconds:.1f}s: {escape(e.reason)}")


def proof_line(fresh: bool, idempotent: bool | None, reboot: str,
               reboot_s: dict[str, float], residue: int) -> str:
    """The proof's gates in one line, e.g. ``fresh server, idempotent, reboot passed
    (lb 31s, web1 30s), residue: none``."""
    gates = ["fresh server" if fresh else "NOT a fresh server",
             {True: "idempotent", False: "NOT idempotent", None: "idempotence not run"}
             [idempotent]]
    times = ", ".join(f"{n} {s:.0f}s" for n, s in sorted(reboot_s.items()))
    gates.append(f"reboot {reboot.replace('_', ' ')}" + (f" ({times})" if times else ""))
    gates.append(f"residue: {residue or 'none'}")
    return ", ".join(gates)


def _converge(fn, *args, **kwargs):
    with events.subscribed(_progress):
        return call(fn, *args, **kwargs)


def _exit_for(status: str) -> None:
    if status == "stopped":
        raise typer.Exit(130)
    if status != "converged":
        raise typer.Exit(1)


def _report(result: Any, as_json: bool) -> None:
    """Print a run's result (JSON or a summary) and exit with its status's code."""
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        _show_result(result)
    _exit_for(result.status)


def _show_result(result: Any) -> None:
    out.print(f"[bold]{result.status}[/bold]: {escape(result.reason)}")
    if result.final is not None:
        for name, text in result.final.texts().items():
            out.print(f"[bold]--- {name} ---[/bold]")
            out.print(text, markup=False, highlight=False)
    if result.proof is not None:
        p = result.proof
        out.print("proof: " + proof_line(p.fresh_server, p.idempotent, p.reboot, p.reboot_s,
                                         len(p.residue)), markup=False)
        for r in p.residue:
            out.print(f"residue: {r.node}: {r.kind} {r.item} ({r.detail})", markup=False)
    for finding in result.findings:
        out.print(f"finding: {finding}", markup=False)
    if result.record_dir:
        out.print(f"record: {result.record_dir}")


@examples_app.command("list")
def examples_list(as_json: JsonOpt = False) -> None:
    """The curated examples. Example: antrieb examples list --json"""
    from antrieb.examples import list_examples

    rows = [e.summary() for e in call(list_examples)]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "nodes", "paths", "title")
    for r in rows:
        table.add_row(r["name"], str(len(r["nodes"])), ",".join(r["expected_paths"]),
                      r["title"])
    out.print(table)


@examples_app.command("run")
def examples_run(name: str, as_json: JsonOpt = False) -> None:
    """Run an example offline (recorded model, real VMs). Example: antrieb examples run nginx-lb
    """
    from antrieb.examples import load_example

    example = call(load_example, name)
    result = _converge(lambda: example.converger().run())
    _report(result, as_json)


@examples_app.command("record")
def examples_record(name: str) -> None:
    """Run an example live (recorded model, real VMs) and, if it converges, make that run
    the example's shipped record (its run/ folder). Example: antrieb examples record firewall
    """
    import shutil

    from antrieb.examples import load_example

    example = call(load_example, name)
    result = _converge(lambda: example.converger().run())
    _show_result(result)
    if result.status != "converged" or not result.record_dir:
        err.print(f"[red]not recorded[/red]: the run ended {result.status}")
        _exit_for(result.status)
        raise typer.Exit(1)
    target = Path(example.folder) / "run"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for part in ("run.json", "events.jsonl", "llm.jsonl"):
        shutil.copy2(f"{result.record_dir}/{part}", target / part)
    out.print(f"recorded: {target}")


@app.command("run")
def run_task(request: str,
             nodes: Annotated[int, typer.Option(help="At most this many nodes (1-4).")] = 4,
             image: Annotated[str | None, typer.Option(help="Image for every node.")] = None,
             tool: Annotated[str, typer.Option(help="shell or ansible.")] = "shell",
             llm: Annotated[str | None, typer.Option(
                 help="LLM spec: openai, openai:MODEL, replay:PATH (default $ANTRIEB_LLM).")
             ] = None,
             as_json: JsonOpt = False) -> None:
    """Converge a task in words with the configured model.

    Example: antrieb run "HAProxy load balancing to 2 nginx backends" --nodes 3
    """
    from pydantic import ValidationError

    from antrieb.converge import Converger, Task
    from antrieb.errors import TaskError

    def go() -> Any:
        try:
            task = Task.model_validate({"request": request, "max_nodes": nodes, "tool": tool,
                                        "images": [image] if image else None})
        except ValidationError as exc:
            raise TaskError("task", str(exc)) from None
        return Converger(task, provider=llm).run()

    result = _converge(go)
    _report(result, as_json)


@runs_app.command("list")
def runs_list(as_json: JsonOpt = False) -> None:
    """Recorded runs, newest first. Example: antrieb runs list --json"""
    from antrieb.converge.record import list_runs

    rows = call(list_runs)
    if as_json:
        print_json(rows)
        return
    table = Table("task", "state", "iterations", "reason")
    table.add_column("run", no_wrap=True)  # last and whole: the ID to copy
    for r in rows:
        table.add_row(r["task"], r["state"], str(r["iterations"]),
                      (r["reason"] or "")[:60], r["run_id"])
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: str, as_json: JsonOpt = False) -> None:
    """One run's record: task, decisions, timings, final code. Example: antrieb runs show ID"""
    from antrieb.converge.record import load_run

    record = call(load_run, run_id)
    if as_json:
        print_json(record)
        return
    result = record.get("result") or {}
    out.print(f"[bold]{record['run_id']}[/bold] {record['task'].get('name')}: "
              f"{record['state']}: {escape(result.get('reason', ''))}")
    for it in result.get("iterations") or []:
        rec = it.get("recovery") or {}
        diag = it.get("diagnosis") or {}
        line = f"  iteration {it['number']} ({it['phase']}): " + (
            "passed" if it["passed"] else f"failed, {diag.get('failure_class')} -> "
            f"{rec.get('path')}: {rec.get('reason', '')}")
        out.print(line, markup=False)
    final = result.get("final")
    if final:
        for key in ("scripts",):
            for role, text in (final.get(key) or {}).items():
                out.print(f"[bold]--- {role} ---[/bold]")
                out.print(text, markup=False, highlight=False)
        if final.get("playbook"):
            out.print(final["playbook"], markup=False, highlight=False)
    out.print(f"record: {record['dir']}")


@runs_app.command("replay")
def runs_replay(run_id: Annotated[str, typer.Argument(help="A run id, or a run folder.")],
                as_json: JsonOpt = False) -> None:
    """Replay a recorded run offline (its LLM recording, fresh VMs) and compare outcomes.

    Example: antrieb runs replay r20261130-051200-ab12
             antrieb runs replay antrieb/examples/firewall/run
    """
    from antrieb.converge.runs import replay_run, same_outcome

    result, record = _converge(replay_run, run_id)
    verdict = same_outcome(result, record)
    if as_json:
        print_json({"run_id": result.run_id, "replay_of": run_id, "status": result.status,
                     "reason": result.reason, **verdict})
    else:
        _show_result(result)
        out.print("same outcome as the recorded run" if verdict["same"]
                  else f"[red]differs from the recorded run[/red]: {verdict['differences']}")
    if not verdict["same"]:
        raise typer.Exit(1)
    _exit_for(result.status)


@bench_app.command("converge")
def bench_converge(name: str, as_json: JsonOpt = False,
                   compare: Annotated[bool, typer.Option(
                       "--compare", help="Run it twice: as before, then with package layers "
                       "and guest tuning; prints the speedup.")] = False,
                   warm: Annotated[bool, typer.Option(
                       "--warm", help="With --compare: keep the layers already cached.")]
                   = False) -> None:
    """Run an example offline and print its figures.

    Example: antrieb bench converge nginx-lb --json
    (--compare: twice, without and with layers and guest tuning, and the speedup)
    """
    from antrieb.converge.runs import bench_compare, bench_example

    if compare:
        figures = call(bench_compare, name, cold=not warm)
        if as_json:
            print_json(figures)
        else:
            for key, value in figures.items():
                out.print(f"{key:34} {value}", markup=False)
        ok = all(figures[k]["converged"] for k in ("before", "layers_and_tuning"))
        raise typer.Exit(0 if ok else 1)
    figures = _converge(bench_example, name)
    if as_json:
        print_json(figures)
    else:
        for key, value in figures.items():
            out.print(f"{key:16} {value}", markup=False)
    _exit_for(figures["status"])
