"""Request handling and the on-disk cache of the apt proxy (:mod:`.aptproxy`): one
:class:`ProxyHandler` serves one client connection in its own worker thread, with
keep-alive and its own keep-alive connections to the upstream mirror."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit

from antrieb.vm.net import aptfault
from antrieb.vm.net.cachefiles import atomic_write_text as _atomic_write_text
from antrieb.vm.net.cachefiles import dated_by_proxy as _dated_by_proxy
from antrieb.vm.net.cachefiles import is_immutable as _is_immutable
from antrieb.vm.net.cachefiles import not_modified_since as _not_modified_since
from antrieb.vm.net.cachefiles import read_meta as _read_meta
from antrieb.vm.net.plan import APT_PSEUDO_HOST

CHUNK = 256 * 1024
MAX_REDIRECTS = 3


class _Denied(Exception):
    pass


class _ClientGone(Exception):
    pass


class ProxyState(Protocol):
    """What a handler needs of its :class:`~antrieb.vm.net.aptproxy.AptProxy`."""

    cache_dir: Path
    upstreams: dict[str, str]
    timeout: float
    fresh_seconds: float

    def count(self, key: str) -> None: ...
    def log(self, method: str, path: str, status: int, cache: str, nbytes: int,
            seconds: float) -> None: ...


class ProxyHandler(BaseHTTPRequestHandler):
    """One client connection; runs in its own worker thread."""

    protocol_version = "HTTP/1.1"
    server_version = "antrieb-aptproxy/1"
    timeout = 300  # idle keep-alive clients are dropped after this
    server: ProxyState  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self._upstream_conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def finish(self) -> None:
        for conn in self._upstream_conns.values():
            conn.close()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access.log has the useful record; stderr belongs to the supervisor

    def __getattr__(self, name: str) -> Any:
        # Every method other than GET/HEAD (CONNECT, POST, ...) is refused with 403.
        if name.startswith("do_"):
            return self._deny_method
        raise AttributeError(name)

    @property
    def proxy(self) -> ProxyState:
        return self.server

    # -- request entry points --------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _deny_method(self) -> None:
        start = time.monotonic()
        self._deny(f"method {self.command} is not allowed", start)

    def _dispatch(self, head: bool) -> None:
        start = time.monotonic()
        if (fault := aptfault.take(self.path)) is not None:  # ANTRIEB_APT_FAULT: tests
            self._started = start
            return self._text(fault, f"antrieb apt proxy: injected fault {fault}\n", "FAULT")
        try:
            archive, rel = self._parse_target()
        except _Denied as exc:
            self._deny(str(exc), start)
            return
        self._started = start
        path = self.proxy.cache_dir / archive / rel
        if _is_immutable(rel) and path.is_file():
            self._send_cached(path, "HIT", {}, head)
        elif _is_immutable(rel):
            self._fetch(archive, rel, path, head, meta=None)
        else:
            self._index(archive, rel, path, head)

    def _parse_target(self) -> tuple[str, str]:
        target = self.path
        if "://" in target:
            url = urlsplit(target)
            try:
                port = url.port
            except ValueError:
                port = -1
            if url.scheme != "http" or url.hostname != APT_PSEUDO_HOST or port not in (None, 80):
                raise _Denied(f"only http://{APT_PSEUDO_HOST}/ is served")
            raw = url.path
        elif target.startswith("/"):
            raw = urlsplit(target).path
        else:
            raise _Denied("bad request target")
        parts = unquote(raw).split("/")[1:]
        # Dot-files never occur in a Debian archive; refusing them also keeps the cache's
        # own temporary and metadata files (".name.*") out of reach.
        if len(parts) < 2 or any(p == "" or p.startswith(".") or "\\" in p or "\0" in p
                                 for p in parts):
            raise _Denied("bad path")
        if parts[0] not in self.proxy.upstreams:
            raise _Denied(f"unknown archive {parts[0]!r}; served: {sorted(self.proxy.upstreams)}")
        return parts[0], "/".join(parts[1:])

    # -- responses -------------------------------------------------------------------

    def _finish(self, status: int, cache: str, nbytes: int) -> None:
        self.proxy.log(self.command, self.path, status, cache, nbytes,
                       time.monotonic() - getattr(self, "_started", time.monotonic()))

    def _deny(self, why: str, start: float) -> None:
        self._started = start
        self.proxy.count("denied")
        self._text(403, f"antrieb apt proxy: {why}\n", "DENIED")

    def _text(self, status: int, body: str, cache: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Antrieb-Cache", cache)
        if status == 403:
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._finish(status, cache, len(data) if self.command != "HEAD" else 0)

    def _not_modified_for_client(self, meta: dict[str, Any]) -> bool:
        return _not_modified_since(meta.get("last_modified"), self.headers.get("If-Modified-Since"))

    def _send_cached(self, path: Path, cache: str, meta: dict[str, Any], head: bool) -> None:
        counter = {"HIT": "hits", "REVALIDATED": "revalidated", "STALE": "stale"}[cache]
        self.proxy.count(counter)
        try:
            f = path.open("rb")
        except FileNotFoundError:  # pruned under us: treat as a miss next time
            self._text(502, "cached file vanished, retry\n", "ERROR")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            if self._not_modified_for_client(meta):
                self.send_response(304)
                self.send_header("X-Antrieb-Cache", cache)
                self.end_headers()
                self._finish(304, cache, 0)
                return
            self.send_response(200)
            self.send_header("Content-Type", meta.get("content_type", "application/octet-stream"))
            self.send_header("Content-Length", str(size))
            lm = meta.get("last_modified") or formatdate(os.fstat(f.fileno()).st_mtime, usegmt=True)
            self.send_header("Last-Modified", lm)
            self.send_header("X-Antrieb-Cache", cache)
            self.end_headers()
            sent = 0 if head else self.connection.sendfile(f)
        self._finish(200, cache, sent)

    def _index(self, archive: str, rel: str, path: Path, head: bool) -> None:
        meta_path = path.with_name(f".{path.name}.meta")
        meta = _read_meta(meta_path) if path.is_file() else {}
        if meta and time.time() - meta.get("checked", 0) < self.proxy.fresh_seconds:
            self._send_cached(path, "HIT", meta, head)
            return
        self._fetch(archive, rel, path, head, meta=meta or None)

    # -- upstream --------------------------------------------------------------------

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conn = self._upstream_conns.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.proxy.timeout)
            self._upstream_conns[key] = conn
        return conn

    def _drop_connection(self, url: str) -> None:
        u = urlsplit(url)
        conn = self._upstream_conns.pop((u.scheme, u.netloc), None)
        if conn is not None:
            conn.close()

    def _request(self, method: str, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """Send one request upstream, following a few redirects; reuses keep-alive connections."""
        for _ in range(MAX_REDIRECTS + 1):
            u = urlsplit(url)
            target = u.path + (f"?{u.query}" if u.query else "")
            for attempt in (0, 1):
                conn = self._connection(u.scheme, u.netloc)
                try:
                    conn.request(method, target, headers={"User-Agent": "antrieb-aptproxy/1",
                                                          **headers})
                    resp = conn.getresponse()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    # A kept-alive connection the mirror had already closed: retry once afresh.
                    self._drop_connection(url)
                    if attempt:
                        raise
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                location = urljoin(url, resp.getheader("Location", ""))
                resp.read()
                if urlsplit(location).scheme not in ("http", "https"):
                    break
                url = location
                continue
            return resp
        raise OSError(f"too many redirects from {url}")

    def _fetch(self, archive: str, rel: str, path: Path, head: bool, *,
               meta: dict[str, Any] | None) -> None:
        url = f"{self.proxy.upstreams[archive]}/{quote(rel)}"
        headers: dict[str, str] = {}
        if meta:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified") and not meta.get("last_modified_by_proxy"):
                headers["If-Modified-Since"] = meta["last_modified"]
        method = "HEAD" if head and not meta else "GET"
        try:
            resp = self._request(method, url, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection(url)
            self._upstream_failed(path, meta, head, f"{type(exc).__name__}: {exc}")
            return
        if resp.status == 304 and meta:
            resp.read()
            meta["checked"] = time.time()
            with contextlib.suppress(OSError):
                _atomic_write_text(path.with_name(f".{path.name}.meta"), json.dumps(meta))
            self._send_cached(path, "REVALIDATED", meta, head)
        elif resp.status == 200 and method == "GET":
            self._stream_and_cache(resp, url, path, head, not _is_immutable(rel), meta)
        elif resp.status == 200:  # HEAD for something not cached: pass the headers on
            resp.read()
            self.send_response(200)
            for name in ("Content-Length", "Content-Type", "Last-Modified"):
                if resp.getheader(name):
                    self.send_header(name, resp.getheader(name, ""))
            self.send_header("X-Antrieb-Cache", "MISS")
            self.end_headers()
            self.proxy.count("misses")
            self._finish(200, "MISS", 0)
        elif resp.status in (404, 410):
            resp.read()
            self._text(resp.status, f"not found upstream: {rel}\n", "MISS")
        else:
            resp.read()
            self._drop_connection(url)
            self._upstream_failed(path, meta, head, f"upstream answered {resp.status}")

    def _upstream_failed(self, path: Path, meta: dict[str, Any] | None, head: bool,
                         why: str) -> None:
        self.proxy.count("errors")
        if meta and path.is_file():
            self._send_cached(path, "STALE", meta, head)
        else:
            self._text(502, f"antrieb apt proxy: upstream failed: {why}\n", "ERROR")

    def _to_client(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise _ClientGone(str(exc)) from exc

    def _stream_and_cache(self, resp: http.client.HTTPResponse, url: str, path: Path, head: bool,
                          meta_wanted: bool, previous: dict[str, Any] | None = None) -> None:
        """Copy the upstream body to the client and into the cache at the same time
        (``previous``: the cached copy's metadata). The cache file appears (atomically)
        only once the whole body has arrived; a client that goes away or an upstream
        that stops early leaves no trace."""
        length_header = resp.getheader("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        meta = {
            "etag": resp.getheader("ETag"), "last_modified": resp.getheader("Last-Modified"),
            "content_type": resp.getheader("Content-Type") or "application/octet-stream",
            "checked": time.time(),
        }
        # An index whose upstream sends no Last-Modified (this host's mirror path strips
        # it) is dated by the proxy (cachefiles.dated_by_proxy), so fetched whole first:
        # whether the bytes changed is known only then. Undated, no client got a 304.
        own_date = meta_wanted and not meta["last_modified"]
        # Without a length we cannot stream under HTTP/1.1 keep-alive (no chunked
        # encoding here): fetch it whole into the cache first, then serve the file. A
        # client whose copy is as new gets 304 once the body is cached: apt says "Hit" and
        # keeps its lists (bookworm's apt still runs apt-key verify on them: measured).
        unchanged = self._not_modified_for_client(meta)
        stream = length is not None and not head and not unchanged and not own_date
        digest = hashlib.sha256() if own_date else None  # packages are not hashed here
        headers_sent = cached = False
        sent = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", meta["content_type"])
                    self.send_header("Content-Length", str(length))
                    if meta["last_modified"]:
                        self.send_header("Last-Modified", meta["last_modified"])
                    self.send_header("X-Antrieb-Cache", "MISS")
                    self.end_headers()
                    headers_sent = True
                got = 0
                # The last chunk is held back until the cache file is in place, so a
                # client that asks again right after its download is already a HIT.
                pending = b""
                while length is None or got < length:
                    chunk = resp.read(CHUNK if length is None else min(CHUNK, length - got))
                    if not chunk:
                        break
                    got += len(chunk)
                    f.write(chunk)
                    if digest:
                        digest.update(chunk)
                    if stream:
                        self._to_client(pending)
                        sent += len(pending)
                        pending = chunk
                if length is not None and got != length:
                    raise OSError(f"upstream sent {got} of {length} bytes")
            if digest:
                meta.update(_dated_by_proxy(digest.hexdigest(), previous))
                unchanged = self._not_modified_for_client(meta)
            if meta_wanted:
                _atomic_write_text(path.with_name(f".{path.name}.meta"), json.dumps(meta))
            os.replace(tmp, path)
            cached = True
            self.proxy.count("misses")
            if pending:
                self._to_client(pending)
                sent += len(pending)
        except (_ClientGone, OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            if not cached:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                # The upstream connection is mid-body either way: it cannot be reused.
                self._drop_connection(url)
            self.proxy.count("aborted" if isinstance(exc, _ClientGone) else "errors")
            if headers_sent:  # the client sees a short body and retries
                self._finish(200, "ABORTED", sent)
            else:
                self._text(502, f"antrieb apt proxy: {exc}\n", "ERROR")
            return
        if stream:
            self._finish(200, "MISS", sent)
            return
        if unchanged:
            self.send_response(304)
            self.send_header("X-Antrieb-Cache", "MISS")
            self.end_headers()
            self._finish(304, "MISS", 0)
            return
        with path.open("rb") as f:
            self.send_response(200)
            self.send_header("Content-Type", meta["content_type"])
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            if meta["last_modified"]:
                self.send_header("Last-Modified", meta["last_modified"])
            self.send_header("X-Antrieb-Cache", "MISS")
            self.end_headers()
            sent = 0 if head else self.connection.sendfile(f)
        self._finish(200, "MISS", sent)
