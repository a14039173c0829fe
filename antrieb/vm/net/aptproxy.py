"""A small caching HTTP proxy for apt, shared by image builds and every cluster.

Why not squid or apt-cacher-ng (both worked or were tried here): the proxy has to
run as threads inside each cluster's supervisor process, accepting on a socket that
lives in the cluster's private network namespace while it talks to the mirror from
the host's namespace; several concurrent clusters (separate processes) must share
one on-disk cache; and it must serve nothing but the Debian archives. A separate
daemon would need its own lifecycle, config and a hole into every namespace.

apt in a VM asks for ``http://apt.antrieb/<archive>/<path>`` (see
:data:`antrieb.vm.net.plan.APT_PSEUDO_HOST`); ``<archive>`` is a key of
``upstreams`` (``debian``, ``debian-security``) and maps to the mirror this host
uses. Files under ``pool/`` and ``by-hash/`` never change and are cached forever;
index files are revalidated upstream (ETag / Last-Modified) and served from cache
when the mirror is down. Each response says how it was served in
``X-Antrieb-Cache``: ``HIT``, ``MISS``, ``REVALIDATED`` or ``STALE`` (cached index
served because the upstream failed). ``cache_dir/access.log`` gets one JSON line
per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from antrieb.vm.net.aptcache import ProxyHandler


class _Listener:
    """One listening socket being served, and what is needed to stop it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.wake_r, self.wake_w = os.pipe()
        self.stopped = threading.Event()
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()

    def stop(self) -> None:
        with self.lock:
            if self.stopped.is_set():
                return
            self.stopped.set()
            if self.wake_w >= 0:  # never write to a closed (maybe reused) descriptor
                with contextlib.suppress(OSError):
                    os.write(self.wake_w, b"x")
            conns = list(self.conns)
        for conn in conns:  # unblock workers waiting on a keep-alive client
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close_pipe(self) -> None:
        with self.lock:
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.wake_r = self.wake_w = -1


class AptProxy:
    """A caching proxy serving only the given Debian archives.

    Args:
        cache_dir: where cached files live; safe to share between processes.
        upstreams: archive name -> upstream base URL
            (see :func:`antrieb.vm.net.mirror.debian_upstreams`).
        timeout: seconds for connecting to, and each read from, the upstream.
        fresh_seconds: an index file revalidated this recently is served without asking
            upstream again (several VMs running ``apt-get update`` at once ask once).
    """

    def __init__(self, cache_dir: Path, upstreams: dict[str, str], *, timeout: float = 20.0,
                 fresh_seconds: float = 30.0):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self.timeout = timeout
        self.fresh_seconds = fresh_seconds
        self.stats: dict[str, int] = dict.fromkeys(
            ("hits", "misses", "revalidated", "stale", "denied", "errors", "aborted"), 0)
        self._lock = threading.Lock()
        self._listeners: set[_Listener] = set()
        self._closed = threading.Event()

    # -- lifecycle -------------------------------------------------------------------

    def serve(self, sock: socket.socket) -> None:
        """Accept and serve connections on the listening ``sock`` until :meth:`close`.

        Every worker thread is started from this thread, and upstream connections are
        made by those workers: they inherit this thread's network namespace, which may
        differ from the one ``sock`` was created in.
        """
        self._serve(sock, _Listener(sock))

    def _serve(self, sock: socket.socket, listener: _Listener) -> None:
        with self._lock:
            if self._closed.is_set():
                listener.stop()
            self._listeners.add(listener)
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sel.register(listener.wake_r, selectors.EVENT_READ)
        try:
            while not listener.stopped.is_set():
                for key, _ in sel.select():
                    if key.fileobj is not sock:
                        continue
                    try:
                        conn, addr = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if listener.stopped.is_set():
                            return
                        raise
                    conn.setblocking(True)
                    with listener.lock:
                        listener.conns.add(conn)
                    threading.Thread(target=self._worker, args=(conn, addr, listener),
                                     name="aptproxy-worker", daemon=True).start()
        finally:
            sel.close()
            listener.close_pipe()
            with self._lock:
                self._listeners.discard(listener)

    def _worker(self, conn: socket.socket, addr: Any, listener: _Listener) -> None:
        try:
            ProxyHandler(conn, addr, self)
        except Exception:  # a broken client must never take the proxy down
            with self._lock:
                self.stats["errors"] += 1
        finally:
            with listener.lock:
                listener.conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        """Stop every :meth:`serve` loop and drop open client connections."""
        self._closed.set()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.stop()

    @contextlib.contextmanager
    def loopback(self) -> Iterator[int]:
        """Serve on ``127.0.0.1:<ephemeral port>`` in a background thread; yields the port."""
        sock = socket.create_server(("127.0.0.1", 0))
        listener = _Listener(sock)
        thread = threading.Thread(target=self._serve, args=(sock, listener),
                                  name="aptproxy-loopback", daemon=True)
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            listener.stop()
            thread.join(10)
            sock.close()

    # -- bookkeeping -----------------------------------------------------------------

    def count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def log(self, method: str, path: str, status: int, cache: str, nbytes: int,
            seconds: float) -> None:
        line = json.dumps({
            "time": round(time.time(), 3), "method": method, "path": path, "status": status,
            "cache": cache, "bytes": nbytes, "seconds": round(seconds, 3),
        }) + "\n"
        # One O_APPEND write per line keeps lines whole across processes sharing the log.
        with contextlib.suppress(OSError):
            fd = os.open(self.cache_dir / "access.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                         0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


