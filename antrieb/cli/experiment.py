"""CLI of experiments: ``antrieb experiment run|rerun|list|show``.

Thin calls into :mod:`antrieb.notebook.experiments`. A parameter value is read as YAML
(``-p max_iterations 3`` is the number 3, ``-p model gpt-4o`` a string). Exit codes:
0 every entry ran, 1 some entry failed, 2 bad input.

Example::

    antrieb experiment run notebooks/experiment.ipynb -p mode recorded \\
        --grid notebooks/grids/examples.yaml --json
    antrieb experiment rerun x20261130-072500-ab12
    antrieb experiment run notebooks/experiment.ipynb --grid G --workers 2  # local Dask
    antrieb experiment run notebooks/experiment.ipynb --grid G --dask tcp://head:8786
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, err, out

experiment_app = typer.Typer(help="Notebooks run through papermill over parameter grids, "
                             "recorded and reproducible.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

_COLUMNS = ["index", "status", "mode", "run_ids", "converged", "iterations", "paths",
            "total_s", "tokens"]


def _parameters(args: list[str]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs (typer has no two-value repeatable option: parsed here)."""
    params: dict[str, Any] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        if flag not in ("-p", "--parameter") or len(rest) < 2:
            err.print(f"[red]error:[/red] unexpected {flag!r}: parameters are given as "
                      "-p NAME VALUE")
            raise typer.Exit(2)
        name, value = rest.pop(0), rest.pop(0)
        try:
            params[name] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            err.print(f"[red]error:[/red] the value of {name!r} is not YAML: {exc}")
            raise typer.Exit(2) from None
    return params


def _show(frame: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(frame.to_json(orient="records", default_handler=str))
    else:
        params = [c for c in frame.columns if c not in _COLUMNS and c not in
                  ("experiment_id", "error", "output", "run_status", "llm_s", "model",
                   "provider", "seconds")]
        table = Table(title=f"experiment {frame.experiment_id.iloc[0]}" if len(frame) else "")
        cols = [c for c in ["index", *params, *_COLUMNS[1:]] if c in frame.columns]
        for c in cols:
            table.add_column(c)
        for _, row in frame.iterrows():
            table.add_row(*[str(row[c]) for c in cols])
        out.print(table)
        for _, row in frame.iterrows():
            if row["status"] != "ok":
                err.print(f"[red]entry {row['index']} failed[/red]: {row['error']}")
        if len(frame):
            err.print(f"executed notebooks: {Path(frame.output.iloc[0]).parent}")
    if (frame.status != "ok").any():
        raise typer.Exit(1)


@experiment_app.command("run", context_settings={"allow_extra_args": True,
                                                  "ignore_unknown_options": True})
def experiment_run(
    ctx: typer.Context,
    notebook: Annotated[Path, typer.Argument(help="The notebook to execute.")],
    grid: Annotated[Path | None, typer.Option(
        "--grid", help="YAML: name -> list of values (every combination), or a list of "
        "parameter mappings.")] = None,
    kernel: Annotated[str | None, typer.Option(help="Jupyter kernel name.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-cell timeout (s).")] = None,
    dask: Annotated[str | None, typer.Option(
        "--dask", metavar="ADDRESS", help="Run each entry as a task on this Dask scheduler "
        "(tcp://HOST:8786); its workers are the hypervisor hosts.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Run the entries on a local Dask cluster of N worker "
        "processes.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run NOTEBOOK once per parameter set; print one row per entry.

    Parameters: -p NAME VALUE (repeatable; the value is read as YAML)."""
    from antrieb.notebook.experiments import run_experiment

    params = _parameters(ctx.args)
    with dask_client(dask, workers) as client:
        frame = call(run_experiment, notebook, params, grid=grid, kernel=kernel,
                     timeout=timeout, log=err.print, client=client)
    _show(frame, as_json)


@contextlib.contextmanager
def dask_client(address: str | None, workers: int | None) -> Iterator[Any]:
    """``--dask ADDRESS`` / ``--workers N`` (experiments and ``antrieb eval``): a client of
    that scheduler or of a local Dask cluster; None for neither (run here)."""
    if address and workers:
        err.print("[red]error:[/red] --dask and --workers exclude each other")
        raise typer.Exit(2)
    if not address and not workers:
        yield None
        return
    try:
        from distributed import Client

        from antrieb.notebook.distributed import local_client
    except ImportError:
        err.print("[red]error:[/red] --dask/--workers need Dask: pip install "
                  "'antrieb[notebook]'")
        raise typer.Exit(2) from None
    if workers:
        with local_client(workers) as client:
            yield client
        return
    try:
        client = Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        err.print(f"[red]error:[/red] no Dask scheduler at {address}: {exc}")
        raise typer.Exit(2) from None
    with client:
        yield client


@experiment_app.command("rerun")
def experiment_rerun(experiment_id: str, as_json: JsonOpt = False) -> None:
    """Run a recorded experiment again (same notebook, same parameter sets)."""
    from antrieb.notebook.experiments import rerun_experiment

    frame = call(rerun_experiment, experiment_id, log=err.print)
    _show(frame, as_json)


@experiment_app.command("list")
def experiment_list(as_json: JsonOpt = False) -> None:
    """Recorded experiments, newest first."""
    from antrieb.notebook.experiments import list_experiments

    rows = list_experiments()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    for c in ("experiment_id", "notebook", "entries", "ok", "rerun_of"):
        table.add_column(c)
    for row in rows:
        table.add_row(*[str(row[c]) for c in ("experiment_id", "notebook", "entries", "ok",
                                               "rerun_of")])
    out.print(table)


@experiment_app.command("show")
def experiment_show(experiment_id: str, as_json: JsonOpt = False) -> None:
    """One experiment's entries and their runs."""
    from antrieb.notebook.experiments import experiment_frame

    _show(call(experiment_frame, experiment_id), as_json)
