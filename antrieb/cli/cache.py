"""``antrieb cache``: what the cache holds, and pruning it down to its limit."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, out, print_json

cache_app = typer.Typer(help="List and prune the cache (images, golden snapshots, layers).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _ago(at: float) -> str:
    s = max(0.0, time.time() - at)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= length:
            return f"{s / length:.0f} {unit} ago"
    return "just now"


@cache_app.command("list")
def cache_list(as_json: JsonOpt = False) -> None:
    """List the cache's entries: kind, name, size, last use, whether prune may evict it.

    Example: antrieb cache list --json
    """
    from antrieb import config
    from antrieb.vm import cachedir

    found = call(cachedir.entries)
    limit = call(cachedir.max_bytes)
    total = sum(e.bytes for e in found)
    if as_json:
        print_json({"root": str(config.cache_dir()), "total_bytes": total, "max_bytes": limit,
                    "entries": [e.to_json() for e in found]})
        return
    table = Table("kind", "name", "size", "last used", "prunable", "why")
    for e in found:
        table.add_row(e.kind, e.name, _size(e.bytes), _ago(e.last_used),
                      "yes" if e.prunable and not e.in_use else "no", e.why)
    out.print(table)
    out.print(f"total {_size(total)}, limit {_size(limit)} (ANTRIEB_CACHE_MAX) in "
              f"{config.cache_dir()}")


@cache_app.command("prune")
def cache_prune(
    max_size: Annotated[str | None, typer.Option(
        "--max", help="The limit, e.g. 500M, 20G, 1.5T (default: ANTRIEB_CACHE_MAX).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only say what would be evicted.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evict outdated, then least recently used entries until the cache is under its
    limit. Saved images, the apt cache and entries in use stay.

    Example: antrieb cache prune --max 5G --dry-run
    """
    from antrieb.vm import cachedir

    limit = (call(cachedir.parse_size, max_size, "--max") if max_size is not None
             else call(cachedir.max_bytes))
    before = sum(e.bytes for e in call(cachedir.entries))
    evicted = call(cachedir.prune, limit, dry_run=dry_run)
    freed = sum(e.bytes for e in evicted)
    if as_json:
        print_json({"dry_run": dry_run, "max_bytes": limit, "total_bytes_before": before,
                    "total_bytes": before - freed, "freed_bytes": freed,
                    "evicted": [e.to_json() for e in evicted]})
        return
    if dry_run:
        for e in evicted:
            reason = f"outdated: {e.why}" if e.outdated else "least recently used"
            out.print(f"would evict {e.kind} {e.name} ({_size(e.bytes)}, {reason})")
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {_size(freed)}: the cache {'would be' if dry_run else 'is'} "
              f"{_size(before - freed)}, limit {_size(limit)}")
    if before - freed > limit:
        out.print("still over the limit: what is left is in use, or kept (saved images, "
                  "the apt cache and what they need); see antrieb cache list")
