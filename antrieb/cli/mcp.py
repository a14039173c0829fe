"""``antrieb mcp``: serve antrieb's tools to MCP clients (Claude Desktop, Cursor, ...).

Registered on the app (:mod:`antrieb.cli.app`) when :mod:`antrieb.cli` imports it.
Over stdio the protocol owns stdout;
everything antrieb prints goes to stderr.

Example::

    antrieb mcp                     # stdio: what a desktop client spawns
    antrieb mcp --http --port 8765  # streamable HTTP at http://127.0.0.1:8765/mcp
"""

from __future__ import annotations

from typing import Annotated

import typer

from antrieb.cli.app import app, err


@app.command("mcp")
def mcp_serve(
    http: Annotated[bool, typer.Option("--http", help="Streamable HTTP instead of stdio.")]
    = False,
    host: Annotated[str, typer.Option(help="HTTP: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port to listen on.")] = 8765,
    token: Annotated[str | None, typer.Option(
        help="HTTP: bearer token clients must send (required off loopback; default "
             "$ANTRIEB_MCP_TOKEN).")] = None,
) -> None:
    """Serve antrieb as an MCP server: whole runs (converge, deploy, run_example,
    list_runs, get_run, stop_run) and borrowed clusters (cluster_up, exec, put_file,
    get_file, cluster_status, cluster_extend, cluster_down, save_node, list_images) with
    lifetimes and quotas. Progress is notified; a cancelled call stops its work.

    Examples: antrieb mcp   |   antrieb mcp --http --port 8765
    """
    if not 1 <= port <= 65535:
        err.print("[red]error:[/red] --port must be 1..65535")
        raise typer.Exit(2)
    try:
        from antrieb.mcp.server import serve
    except ImportError as exc:
        err.print(f"[red]missing:[/red] the MCP SDK ({exc.name}): pip install 'antrieb[mcp]'")
        raise typer.Exit(3) from None
    if http:
        err.print(f"antrieb MCP server on http://{host}:{port}/mcp (Ctrl-C stops it)")
    from antrieb.errors import ConfigError

    try:
        serve(http=http, host=host, port=port, token=token)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
