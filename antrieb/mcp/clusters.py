"""The MCP tools over clusters an agent borrows and drives itself: ``cluster_up``,
``exec``, ``put_file`` / ``get_file``, ``cluster_status``, ``cluster_extend``,
``cluster_down``, ``save_node``, ``list_images``.

Each is a thin call of the :class:`~antrieb.cluster.Cluster` API on a cluster lent by the
:class:`~antrieb.mcp.pool.ClusterPool` (lifetime, quotas, owner). Commands run only
inside the cluster's VMs; file paths are guest paths. Slow calls send progress
notifications; a cancelled call stops its work (a start is killed, a command's process
group in the guest is killed, a save is undone).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import queue
import secrets
import shlex
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from antrieb import events
from antrieb.errors import AntriebError, LimitError
from antrieb.mcp.pool import ClusterPool, Entry

HEARTBEAT_S = 2.0
_CLUSTER_KINDS = {"cluster_state_changed", "vm_state_changed", "golden_snapshot_ready",
                  "image_build_progress", "cluster_ready"}


def owner_of(ctx: Context) -> str:
    """Who a call comes from: its HTTP session, or the one stdio client."""
    headers = ctx.headers or {}
    session = headers.get("mcp-session-id")
    return f"http:{session}" if session else "stdio"


def _fail(exc: BaseException) -> ToolError:
    if isinstance(exc, KeyError):  # cluster["x"]: the message lists the nodes
        return ToolError(str(exc.args[0]) if exc.args else str(exc))
    return ToolError(str(exc))


async def in_worker(ctx: Context, what: str, work: Callable[[], Any], *,
                    cluster_id: str | None = None,
                    on_cancel: Callable[[], Any] | None = None) -> Any:
    """``work()`` in a thread; its cluster's events and a heartbeat as progress. When the
    call is cancelled, ``on_cancel()`` stops the work and we wait (shielded) for it."""
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def listen(event: events.Event) -> None:
        if cluster_id and getattr(event, "cluster", None) == cluster_id \
                and event.kind in _CLUSTER_KINDS:
            detail = getattr(event, "state", None) or event.kind
            node = getattr(event, "node", None)
            inbox.put(f"{cluster_id}{'/' + node if node else ''}: {detail}")

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc

    unsubscribe = events.subscribe(listen)
    thread = threading.Thread(target=events.carry(run), name=f"antrieb-mcp-{what}",
                              daemon=True)
    t0 = last = time.monotonic()
    count = 0
    try:
        thread.start()
        while thread.is_alive():
            await anyio.sleep(0.1)
            while not inbox.empty():
                count += 1
                await ctx.report_progress(count, None, inbox.get())
            if time.monotonic() - last >= HEARTBEAT_S:
                last = time.monotonic()
                count += 1
                await ctx.report_progress(count, None, f"{what}: {last - t0:.0f}s")
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            if on_cancel is not None:
                await anyio.to_thread.run_sync(on_cancel)
            deadline = time.monotonic() + 120
            while thread.is_alive() and time.monotonic() < deadline:
                await anyio.sleep(0.05)
        raise
    finally:
        unsubscribe()
    if "error" in box:
        raise _fail(box["error"]) from None
    return box["result"]


def describe(pool: ClusterPool, entry: Entry) -> dict[str, Any]:
    c = entry.cluster
    left = pool.remaining(entry)
    return {"cluster": c.id, "state": str(getattr(c.state, "value", c.state)),
            "expires_in_s": None if left is None else round(left),
            "nodes": [{"name": n.name, "role": n.role, "image": n.image, "address": n.ip,
                       "os": entry.facts.get("os", {}).get(n.name, "")} for n in c.nodes]}


def _result(r: Any, command: str) -> dict[str, Any]:
    out = r.model_dump()
    out["command"] = command  # without the cancel bookkeeping around it
    return out


def add_cluster_tools(server: MCPServer, pool: ClusterPool) -> None:
    """Register the cluster tools on ``server``, lending clusters from ``pool``."""

    def entry_of(ctx: Context, cluster: str) -> Entry:
        try:
            return pool.get(owner_of(ctx), cluster)
        except AntriebError as exc:
            raise _fail(exc) from None

    @server.tool()
    async def cluster_up(
        nodes: Annotated[list[dict[str, str]], Field(
            description="1 to 4 nodes: [{'name': 'web1', 'role': 'web', 'image': "
                        "'debian-12'}]; image: a recipe or a saved image (list_images)",
            min_length=1)],
        ctx: Context,
        lifetime_s: Annotated[int | None, Field(
            ge=1, description="Seconds it lives once up (default: the server's, 600); "
                              "cluster_extend adds more, up to the maximum")] = None,
    ) -> dict[str, Any]:
        """Start a cluster of fresh VMs (restored from snapshots: seconds) in a private
        network; nodes reach each other by name. Returns its id, each node's name,
        address and OS, and when it expires."""
        try:
            entry = pool.reserve(owner_of(ctx), nodes, lifetime_s)
        except (AntriebError, ValueError) as exc:
            raise _fail(exc) from None
        t0 = time.monotonic()

        def up() -> Entry:
            pool.bring_up(entry)
            os_names = entry.cluster.run_all(
                ". /etc/os-release && echo \"$PRETTY_NAME\"", timeout=30)
            entry.facts["os"] = {n: r.stdout.strip() for n, r in os_names.items()}
            return entry

        def stop() -> None:
            pool.forget(entry)
            entry.cluster.down()

        await in_worker(ctx, "cluster_up", up, cluster_id=entry.id, on_cancel=stop)
        return {**describe(pool, entry), "seconds": round(time.monotonic() - t0, 2)}

    @server.tool()
    async def exec(
        cluster: str,
        command: Annotated[str, Field(min_length=1, description="bash, run as root")],
        ctx: Context,
        node: Annotated[str, Field(description="A node name, or 'all'")] = "all",
        timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0,
    ) -> dict[str, Any]:
        """Run a shell command on one node or all (in parallel), inside the VMs. Each
        result: exit_status (None if killed by the timeout), stdout, stderr (capped),
        seconds, truncated, timed_out."""
        entry = entry_of(ctx, cluster)
        c = entry.cluster
        names = [n.name for n in c.nodes] if node == "all" else [node]
        # the command notes its process group, so a cancelled call can kill it
        mark = f"/run/antrieb-exec-{secrets.token_hex(4)}"
        wrapped = (f"echo $PPID > {mark}; trap 'rm -f {mark}' EXIT\n{command}")

        def cancel() -> None:
            for name in names:
                with contextlib.suppress(Exception):  # the cluster may be going down
                    c[name].run(f"kill -KILL -- -$(cat {mark}) 2>/dev/null; rm -f {mark}",
                                timeout=15)

        results = await in_worker(
            ctx, "exec", lambda: c.run_all(wrapped, timeout=timeout_s, nodes=names),
            on_cancel=cancel)
        return {"cluster": cluster, "results": [_result(r, command)
                                                for r in results.values()]}

    @server.tool()
    async def put_file(
        cluster: str, node: str,
        path: Annotated[str, Field(description="Absolute path in the guest")],
        content: str, ctx: Context,
        encoding: Literal["utf-8", "base64"] = "utf-8",
        mode: Annotated[str, Field(pattern=r"^[0-7]{3,4}$")] = "644",
    ) -> dict[str, Any]:
        """Write a file on a node (size-capped; base64 for binary content)."""
        entry = entry_of(ctx, cluster)
        if not path.startswith("/"):
            raise ToolError(f"path must be absolute in the guest, not {path!r}")
        try:
            data = base64.b64decode(content, validate=True) if encoding == "base64" \
                else content.encode()
        except binascii.Error as exc:
            raise ToolError(f"content is not valid base64: {exc}") from None
        if len(data) > pool.limits.file_bytes:
            raise ToolError(str(LimitError("ANTRIEB_MCP_FILE_MAX_BYTES",
                                           pool.limits.file_bytes,
                                           f"{len(data)} bytes is too large a file")))
        await in_worker(ctx, "put_file",
                        lambda: entry.cluster[node].put(path, data, int(mode, 8)))
        return {"cluster": cluster, "node": node, "path": path, "bytes": len(data)}

    @server.tool()
    async def get_file(
        cluster: str, node: str,
        path: Annotated[str, Field(description="Absolute path in the guest")],
        ctx: Context,
    ) -> dict[str, Any]:
        """Read a file from a node (size-capped): its text if UTF-8, else base64."""
        entry = entry_of(ctx, cluster)
        if not path.startswith("/"):
            raise ToolError(f"path must be absolute in the guest, not {path!r}")
        n = entry.cluster[node] if node in [x.name for x in entry.cluster.nodes] else None
        if n is None:
            raise ToolError(f"no node {node!r} in cluster {cluster}")

        def read() -> bytes:
            size = n.run(f"stat -L -c %s -- {shlex.quote(path)}", timeout=30)
            if size.ok and int(size.stdout.strip() or 0) > pool.limits.file_bytes:
                raise LimitError("ANTRIEB_MCP_FILE_MAX_BYTES", pool.limits.file_bytes,
                                 f"{path} has {size.stdout.strip()} bytes")
            return n.get(path)

        data = await in_worker(ctx, "get_file", read)
        try:
            return {"path": path, "bytes": len(data), "encoding": "utf-8",
                    "content": data.decode()}
        except UnicodeDecodeError:
            return {"path": path, "bytes": len(data), "encoding": "base64",
                    "content": base64.b64encode(data).decode()}

    @server.tool()
    def cluster_status(cluster: str | None = None, *, ctx: Context) -> dict[str, Any]:
        """This client's clusters (or one): state, nodes, seconds until each expires."""
        entries = [entry_of(ctx, cluster)] if cluster else pool.owned(owner_of(ctx))
        return {"clusters": [describe(pool, e) for e in entries],
                "limits": {"per_client": pool.limits.per_client,
                           "total": pool.limits.total,
                           "max_lifetime_s": pool.limits.max_lifetime}}

    @server.tool()
    def cluster_extend(cluster: str, ctx: Context,
                       seconds: Annotated[float, Field(gt=0)] = 600.0) -> dict[str, Any]:
        """Give a cluster more time, up to the server's maximum lifetime."""
        try:
            entry = pool.extend(owner_of(ctx), cluster, seconds)
        except AntriebError as exc:
            raise _fail(exc) from None
        return describe(pool, entry)

    @server.tool()
    async def cluster_down(cluster: str, ctx: Context) -> dict[str, Any]:
        """Tear a cluster down now: every VM stops, nothing is kept."""
        entry_of(ctx, cluster)
        seconds = await in_worker(ctx, "cluster_down",
                                  lambda: pool.down(owner_of(ctx), cluster))
        return {"cluster": cluster, "down": True, "teardown_s": round(seconds, 3)}

    @server.tool()
    async def save_node(
        cluster: str, node: str,
        image: Annotated[str, Field(description="Name of the new image (lowercase, "
                                    "digits, '.', '-')")],
        ctx: Context,
    ) -> dict[str, Any]:
        """Save a running node's disk and memory as a new image that cluster_up can
        name: its clones resume where the node was (files, processes). The node pauses
        for the save and then goes on."""
        entry = entry_of(ctx, cluster)
        t0 = time.monotonic()

        def undo() -> None:
            from antrieb.vm import saved

            saved.remove(image)

        def save() -> dict[str, Any]:
            manifest = entry.cluster.save_node(node, image)
            if cancelled.is_set():
                undo()
            return manifest

        cancelled = threading.Event()
        manifest = await in_worker(ctx, "save_node", save,
                                   on_cancel=lambda: cancelled.set())
        return {"image": image, "memory": manifest.get("memory", False),
                "origin": manifest.get("origin"), "seconds": round(time.monotonic() - t0, 2)}

    @server.tool()
    def list_images() -> dict[str, Any]:
        """Images cluster_up can name: the recipes, and the saved images (with where
        each came from)."""
        from antrieb.vm import saved
        from antrieb.vm.images import catalogue

        return {"recipes": [{"name": r.name, "description": r.description, "suite": r.suite}
                            for r in catalogue().values()],
                "saved": [{"name": m["name"], "origin": m.get("origin"),
                           "memory": m.get("memory", False), "created": m.get("created"),
                           "driver": m.get("driver")} for m in saved.list_saved()]}
