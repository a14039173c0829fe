"""The ``antrieb`` app and what every command group shares: the consoles, ``--json``,
progress on stderr, and :func:`call`, which maps errors to exit codes.

Exit codes: 0 success, 1 the work failed (a VM, a build, a check), 2 bad input
(unknown image, too many nodes...), 3 the host lacks something (see ``antrieb doctor``),
130 interrupted.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from antrieb import events
from antrieb.errors import AntriebError, ConfigError, MissingToolError

app = typer.Typer(help="Run infrastructure code on throw-away clusters of real VMs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
err = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


def print_json(obj: object) -> None:
    """Plain JSON on stdout: no colour, no wrapping, so programs can parse it."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _progress_printer(event: events.Event) -> None:
    """Human progress on stderr, so stdout stays clean for --json."""
    if isinstance(event, events.ImageBuildProgress):
        pct = f" {event.fraction * 100:3.0f}%" if event.fraction is not None else ""
        err.print(f"[dim]image {event.image}:{pct} {event.step} {event.detail}[/dim]")
    elif isinstance(event, events.ImageBuilt):
        how = "cached" if event.cached else f"built in {event.seconds:.0f}s"
        err.print(f"image {event.image} {event.content_hash[:12]} {how}")
    elif isinstance(event, events.GoldenSnapshotReady) and not event.cached:
        err.print(f"golden snapshot of {event.image} made in {event.seconds:.1f}s")
    elif isinstance(event, events.CacheEvicted):
        err.print(f"[dim]cache: evicted {event.entry_kind} {event.name} "
                  f"({event.bytes / 2**20:.0f} MiB, {event.reason})[/dim]")
    elif isinstance(event, events.ClusterReady):
        err.print(f"cluster {event.cluster} ready in {event.seconds:.2f}s "
                  f"({event.driver}, {event.accel})")


def call(fn, *args, **kwargs):
    """Call fn with progress shown; map errors to exit codes and clear messages."""
    unsubscribe = events.subscribe(_progress_printer)
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]: everything started was torn down")
        raise typer.Exit(130) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except MissingToolError as exc:
        err.print(f"[red]missing:[/red] {exc}\n(run `antrieb doctor`)")
        raise typer.Exit(3) from None
    except AntriebError as exc:
        err.print(f"[red]failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        unsubscribe()
