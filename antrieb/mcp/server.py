"""antrieb as an MCP server (the official SDK's ``MCPServer``): ``antrieb mcp``.

Two kinds of tools, both thin typed functions over the public API:

- whole runs (:mod:`antrieb.mcp.runs`): ``converge``, ``deploy``, ``run_example``,
  ``list_runs`` / ``get_run``, ``stop_run``; several at once, each scoped;
- clusters an agent borrows (:mod:`antrieb.mcp.clusters`): ``cluster_up``, ``exec``,
  ``put_file`` / ``get_file``, ``cluster_status``, ``cluster_extend``, ``cluster_down``,
  ``save_node``, ``list_images``; with lifetimes and quotas (:mod:`antrieb.mcp.pool`).

Nothing outlives the server: a client's clusters go down when its stdio closes or its
HTTP session ends, all of them when the server stops (and if the process is killed, each
cluster's supervisor takes its VMs with it). HTTP binds to loopback by default; bound
anywhere else it requires a bearer token (``--token`` or ``ANTRIEB_MCP_TOKEN``).

Example (Claude Desktop, Cursor: see the README for the config snippet)::

    antrieb mcp                          # stdio
    antrieb mcp --http --port 8765       # streamable HTTP on 127.0.0.1:8765/mcp
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

from antrieb import __version__, config
from antrieb.errors import ConfigError
from antrieb.mcp.clusters import add_cluster_tools
from antrieb.mcp.pool import ClusterPool, Limits
from antrieb.mcp.runs import Runs, add_run_tools

INSTRUCTIONS = """antrieb runs infrastructure code on throw-away clusters of up to 4 real
Debian VMs. Either hand it a whole task (converge, deploy: retries or troubleshoots with an
LLM until the checks pass, proves one clean script on a fresh cluster; minutes), or borrow
a cluster and drive it yourself: cluster_up, exec, put_file/get_file, save_node (a node as
a new image), cluster_down. Borrowed clusters expire (cluster_extend gives more time) and
are limited per client. Watch the progress notifications; cancel a call to stop it."""


def build_server(pool: ClusterPool | None = None, limits: Limits | None = None) -> MCPServer:
    """The MCP server with antrieb's tools (not yet running). Its lifespan starts the
    pool's reaper and tears every lent cluster down when the server stops."""
    limits = limits or (pool.limits if pool else Limits.from_settings())
    pool = pool or ClusterPool(limits)

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        pool.start()
        try:
            yield {"pool": pool}
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.close)

    server: MCPServer = MCPServer(name="antrieb", version=__version__,
                                  instructions=INSTRUCTIONS, lifespan=lifespan)
    add_run_tools(server, Runs(max_runs=limits.max_runs))
    add_cluster_tools(server, pool)
    server.antrieb_pool = pool  # type: ignore[attr-defined]  (serve() hooks session ends)
    return server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_bearer(app: Any, token: str) -> Any:
    """An ASGI wrapper that answers 401 unless ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body",
                            "body": b'{"error": "a bearer token is required"}'})
                return
        await app(scope, receive, send)

    return guarded


def _release_on_session_end(server: MCPServer, pool: ClusterPool) -> None:
    """Tear a session's clusters down when the SDK discards the session (client DELETE,
    idle timeout, crash). The SDK has no public hook for it: wrap its own method."""
    manager = server.session_manager
    original = getattr(manager, "_discard_session", None)
    if original is None:  # a newer SDK: lifetimes still end every cluster
        print("antrieb: cannot watch HTTP session ends; clusters end by their lifetime",
              file=sys.stderr)
        return

    async def discard(session_id: str, transport: Any) -> None:
        try:
            await original(session_id, transport)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.release, f"http:{session_id}")

    manager._discard_session = discard  # type: ignore[method-assign]


def serve(http: bool = False, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None) -> None:
    """Serve until the client goes away (stdio) or Ctrl-C (HTTP)."""
    import logging

    # one line per SSH connection is noise in a client's server log
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    token = token or config.setting("mcp_token") or None
    if http and not is_loopback(host) and not token:
        raise ConfigError(f"binding to {host} (not loopback) needs a bearer token: "
                          f"--token or ANTRIEB_MCP_TOKEN")
    server = build_server()
    pool: ClusterPool = server.antrieb_pool  # type: ignore[attr-defined]
    try:
        if not http:
            server.run("stdio")
            return
        import uvicorn

        app = server.streamable_http_app(host=host)
        _release_on_session_end(server, pool)
        if token:
            app = require_bearer(app, token)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        pool.close()  # idempotent: the lifespan did it already unless it never ran
