"""Kept clusters: clusters that the process holding them (an MCP server, a notebook)
publishes, so that ``antrieb cluster list|exec|down`` in another shell can reach them.

``Cluster(..., keep=True)`` publishes itself once up and withdraws when it goes down.
In ``$ANTRIEB_CACHE/clusters/`` each has ``<id>.json`` (who keeps it, its nodes, extra
facts such as an expiry) and ``<id>.sock``, a Unix socket served by a thread of the
keeping process: one JSON request per connection (``status``, ``exec``, ``down``), one
JSON reply. Commands go through the same :class:`~antrieb.cluster.Cluster` API; the VMs
stay the keeping process's and end with it (the socket only reaches in).

Example::

    from antrieb import Cluster, kept
    c = Cluster(nodes=2, keep=True).up()
    kept.list_kept()                                   # [{'cluster': 'c1a2b3', ...}]
    kept.request(c.id, op="exec", node="all", command="uptime")
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

from antrieb import config
from antrieb.errors import AntriebError, UnknownNameError

# a Cluster (not imported: antrieb.cluster imports this module)
Cluster = Any

MAX_REQUEST = 1 << 20
_servers: dict[str, socketserver.BaseServer] = {}
_lock = threading.Lock()


def folder() -> Path:
    path = config.cache_dir() / "clusters"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _serve_one(cluster: Cluster, req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "status":
        return {"ok": True, **describe(cluster)}
    if op == "down":
        threading.Thread(target=cluster.down, daemon=True).start()  # this thread is withdrawn
        return {"ok": True, "cluster": cluster.id, "stopping": True}
    if op == "exec":
        node, command = req.get("node", "all"), str(req.get("command", ""))
        timeout = float(req.get("timeout", 600))
        names = [n.name for n in cluster] if node == "all" else [node]
        results = cluster.run_all(command, timeout=timeout, nodes=names)
        return {"ok": True, "results": [r.model_dump() for r in results.values()]}
    return {"ok": False, "error": f"unknown op {op!r}: status, exec or down"}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        cluster: Cluster = self.server.cluster  # type: ignore[attr-defined]
        try:
            req = json.loads(self.rfile.readline(MAX_REQUEST) or b"{}")
            reply = _serve_one(cluster, req)
        except (AntriebError, KeyError, ValueError) as exc:
            reply = {"ok": False, "error": str(exc).strip("'\"")}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False  # a `down` request withdraws the server it came in on


def describe(cluster: Cluster) -> dict[str, Any]:
    return {"cluster": cluster.id, "state": cluster.state.value, "pid": os.getpid(),
            "nodes": [{"name": n.name, "role": n.role, "image": n.image, "ip": n.ip}
                      for n in cluster.nodes]}


def publish(cluster: Cluster, **facts: Any) -> None:
    """Serve ``cluster`` on its socket and write its record."""
    sock = folder() / f"{cluster.id}.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    server = _Server(str(sock), _Handler)
    server.cluster = cluster  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name=f"antrieb-kept-{cluster.id}",
                     daemon=True).start()
    with _lock:
        _servers[cluster.id] = server
    update(cluster.id, since=time.time(), **describe(cluster), **facts)


def update(cluster_id: str, **facts: Any) -> None:
    """Add facts (an owner, an expiry...) to a kept cluster's record."""
    path = folder() / f"{cluster_id}.json"
    record = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**record, **facts}))
    tmp.replace(path)


def withdraw(cluster_id: str) -> None:
    """Stop serving and forget the record. Idempotent."""
    with _lock:
        server = _servers.pop(cluster_id, None)
    if server is not None:
        server.shutdown()
        server.server_close()
    for suffix in (".json", ".sock"):
        with contextlib.suppress(FileNotFoundError):
            (folder() / f"{cluster_id}{suffix}").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_kept() -> list[dict[str, Any]]:
    """Every kept cluster on this host whose keeper is alive (stale records go)."""
    found = []
    for path in sorted(folder().glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not _alive(int(record.get("pid", 0))):
            for stale in (path, path.with_suffix(".sock")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            continue
        found.append(record)
    return found


def request(cluster_id: str, timeout: float = 900.0, **req: Any) -> dict[str, Any]:
    """One request to the process keeping ``cluster_id``; its JSON reply."""
    path = folder() / f"{cluster_id}.sock"
    if not path.exists():
        raise UnknownNameError("kept cluster", cluster_id,
                               [r["cluster"] for r in list_kept()])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise AntriebError(f"cluster {cluster_id}: its keeper does not answer ({exc})"
                               ) from exc
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise AntriebError(f"cluster {cluster_id}: its keeper hung up")
    return json.loads(data)
