"""``antrieb images``: build and list VM images."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, out, print_json

images_app = typer.Typer(help="Build and list VM images.", no_args_is_help=True)
app.add_typer(images_app, name="images")


@images_app.command("build")
def images_build(name: str, force: Annotated[bool, typer.Option(help="Rebuild even if cached.")]
                 = False, as_json: JsonOpt = False) -> None:
    """Build an image from its recipe (cached by content hash).

    Example: antrieb images build debian-12
    """
    from antrieb.vm import images

    art = call(images.build, name, force=force)
    info = {"name": art.name, "hash": art.content_hash, "dir": str(art.dir),
            "kernel_version": art.kernel_version}
    if as_json:
        print_json(info)
    else:
        out.print(f"{art.name} {art.content_hash[:12]} at {art.dir}")


@images_app.command("list")
def images_list(as_json: JsonOpt = False) -> None:
    """List image recipes and whether they are built. Example: antrieb images list --json"""
    from antrieb.vm import images

    rows = call(images.list_images)
    if as_json:
        print_json(rows)
        return
    table = Table("name", "suite", "built", "hash", "size", "description")
    for r in rows:
        size = f"{r.get('size', 0) / 2**20:.0f} MiB" if r.get("built") else ""
        table.add_row(r["name"], r.get("suite", ""), "yes" if r.get("built") else "no",
                      (r.get("hash") or "")[:12], size, r.get("description", ""))
    out.print(table)
