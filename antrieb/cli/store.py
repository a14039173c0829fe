"""``antrieb store``: the run store (SQLite by default, PostgreSQL by URL).

Registered on the app (:mod:`antrieb.cli.app`) when :mod:`antrieb.cli` imports it.
Exit codes: 0 done, 1 the store failed (unreachable, refused), 2 bad input (a folder that
is no run record).

Example::

    antrieb store info --json
    antrieb store import                       # every recorded run not yet in the store
    antrieb store export --to postgresql://grafana@localhost/antrieb
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, err, out, print_json

store_app = typer.Typer(help="The run store: info, import run records, export to "
                        "PostgreSQL.", no_args_is_help=True)
app.add_typer(store_app, name="store")

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Store URL or SQLite path (default $ANTRIEB_STORE, else the cache's "
    "store.sqlite).")]


@store_app.command("info")
def store_info(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Where the store is, its schema version and row counts. Example: antrieb store info"""
    from antrieb import store as st

    def info() -> dict:
        db = st.connect(store)
        try:
            return {"url": st.redact_url(db.url), "dialect": db.dialect,
                    "schema_version": db.version(), "latest_schema": st.LATEST,
                    "rows": {t: db.count(t) for t in st.TABLES}}
        finally:
            db.close()

    rep = call(info)
    if as_json:
        print_json(rep)
        return
    out.print(f"{rep['url']} ({rep['dialect']}, schema v{rep['schema_version']})")
    table = Table("table", "rows")
    for name, n in rep["rows"].items():
        table.add_row(name, str(n))
    out.print(table)


@store_app.command("import")
def store_import(
    run_dirs: Annotated[list[Path] | None, typer.Argument(
        help="Run record folders (run.json + events.jsonl); default: every recorded run.")]
    = None,
    experiment: Annotated[list[Path] | None, typer.Option(
        help="An experiment.json to import (repeatable).")] = None,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Import run records (and experiments) into the store; importing again adds nothing.

    Examples: antrieb store import   |   antrieb store import antrieb/examples/*/run
    """
    from antrieb import store as st
    from antrieb.converge.record import runs_dir

    folders = list(run_dirs or [])
    if not folders and not experiment:
        folders = sorted(p.parent for p in runs_dir().glob("*/run.json"))

    def go() -> dict:
        db = st.connect(store)
        try:
            ids = []
            for i, folder in enumerate(folders, 1):
                ids.append(st.ingest_run(folder, db=db))
                if not as_json:
                    err.print(f"[dim]{i}/{len(folders)} {ids[-1]}[/dim]")
            for path in experiment or []:
                st.ingest_experiment(path, db=db)
            return {"runs": ids, "experiments": [str(p) for p in experiment or []],
                    "rows": {t: db.count(t) for t in st.TABLES}}
        finally:
            db.close()

    rep = call(go)
    if as_json:
        print_json(rep)
    else:
        out.print(f"imported {len(rep['runs'])} run(s), {len(rep['experiments'])} "
                  f"experiment(s); the store has {rep['rows']['runs']} run(s)")


@store_app.command("export")
def store_export(
    to: Annotated[str, typer.Option("--to", help="Target store: postgresql://... "
                                    "(or a SQLite path).")],
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Copy every run of the local store into another (PostgreSQL for Grafana); rows
    already there are updated, never duplicated, so running it again is safe.

    Example: antrieb store export --to postgresql://grafana@localhost/antrieb
    """
    from antrieb import store as st

    counts = call(st.export, to=to, source=store)
    if as_json:
        print_json({"to": st.redact_url(to), "rows": counts})
    else:
        out.print(f"exported to {st.redact_url(to)}: " +
                  ", ".join(f"{t} {n}" for t, n in counts.items() if n))
