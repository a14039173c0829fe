"""The apt proxy against a real local HTTP server playing the Debian mirror."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from antrieb.vm.net.aptproxy import AptProxy

DEB = b"!<arch>\n" + bytes(range(256)) * 40  # ~10 KB "package"
BIG = b"x" * (4 * 1024 * 1024)
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


class FakeMirror:
    """A tiny Debian archive on 127.0.0.1 with ETags, 304s, an off switch and a slow file."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {
            "/debian/dists/bookworm/InRelease": b"Origin: Debian\nSuite: stable\n",
            "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/abc": b"Package: hello\n",
            "/debian/pool/main/h/hello/hello_1_amd64.deb": DEB,
            "/debian/pool/main/b/big/big_1_amd64.deb": BIG,
            "/security/dists/bookworm-security/InRelease": b"Origin: Debian security\n",
        }
        self.down = False
        self.slow = False
        self.validators = True  # False: no ETag or Last-Modified, as this host's mirror path
        self.truncate = False
        self.requests: list[tuple[str, str]] = []
        self.conditional: list[bool] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                mirror.requests.append((self.command, self.path))
                mirror.conditional.append(bool(self.headers.get("If-Modified-Since")
                                               or self.headers.get("If-None-Match")))
                if mirror.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if mirror.validators and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if mirror.validators:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", LAST_MODIFIED)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if mirror.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                step = 64 * 1024
                for i in range(0, len(body), step):
                    try:
                        self.wfile.write(body[i:i + step])
                    except OSError:
                        return
                    if mirror.slow:
                        time.sleep(0.01)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror() -> Iterator[FakeMirror]:
    m = FakeMirror()
    yield m
    m.close()


@pytest.fixture
def proxy(tmp_path: Path, mirror: FakeMirror) -> Iterator[tuple[AptProxy, int]]:
    p = AptProxy(tmp_path / "cache", {"debian": f"{mirror.url}/debian",
                                      "debian-security": f"{mirror.url}/security"},
                 timeout=5, fresh_seconds=0)
    with p.loopback() as port:
        yield p, port


def get(port: int, target: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def log_lines(proxy: AptProxy, at_least: int = 0) -> list[dict]:
    """The access log; waits a little for ``at_least`` lines (a line is written after the
    response has gone out, so the client may be a moment ahead of it)."""
    path = proxy.cache_dir / "access.log"
    end = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= at_least or time.monotonic() > end:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_pool_file_miss_then_hit_absolute_uri(proxy, mirror):
    p, port = proxy
    url = "http://apt.antrieb/debian/pool/main/h/hello/hello_1_amd64.deb"
    status, headers, body = get(port, url)
    assert (status, headers["x-antrieb-cache"], body) == (200, "MISS", DEB)
    status, headers, body = get(port, url)
    assert (status, headers["x-antrieb-cache"], body) == (200, "HIT", DEB)
    assert len([r for r in mirror.requests if r[1].endswith(".deb")]) == 1
    assert p.stats["misses"] == 1 and p.stats["hits"] == 1
    cached = p.cache_dir / "debian/pool/main/h/hello/hello_1_amd64.deb"
    assert cached.read_bytes() == DEB
    # each handler thread logs after its response went out: under load the HIT's line
    # may land before the MISS's, so compare without order
    lines = log_lines(p, 2)
    assert sorted((line["status"], line["cache"], line["bytes"]) for line in lines) == [
        (200, "HIT", len(DEB)), (200, "MISS", len(DEB))]
    assert all(line["method"] == "GET" and line["path"] == url for line in lines)


def test_origin_form_and_second_archive(proxy):
    _, port = proxy
    status, headers, body = get(port, "/debian-security/dists/bookworm-security/InRelease")
    assert status == 200 and body == b"Origin: Debian security\n"
    assert headers["x-antrieb-cache"] == "MISS"


def test_by_hash_is_immutable(proxy, mirror):
    _, port = proxy
    target = "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/abc"
    assert get(port, target)[1]["x-antrieb-cache"] == "MISS"
    mirror.down = True
    assert get(port, target)[1]["x-antrieb-cache"] == "HIT"


def test_index_revalidated_then_stale_when_upstream_down(proxy, mirror):
    p, port = proxy
    target = "http://apt.antrieb/debian/dists/bookworm/InRelease"
    assert get(port, target)[1]["x-antrieb-cache"] == "MISS"
    status, headers, body = get(port, target)
    assert (status, headers["x-antrieb-cache"]) == (200, "REVALIDATED")
    assert body == mirror.files["/debian/dists/bookworm/InRelease"]
    # a new Release upstream replaces the cached one
    mirror.files["/debian/dists/bookworm/InRelease"] = b"Origin: Debian\nSuite: newer\n"
    status, headers, body = get(port, target)
    assert (headers["x-antrieb-cache"], body) == ("MISS", b"Origin: Debian\nSuite: newer\n")
    mirror.down = True
    status, headers, body = get(port, target)
    assert (status, headers["x-antrieb-cache"]) == (200, "STALE")
    assert body == b"Origin: Debian\nSuite: newer\n"
    assert p.stats["stale"] == 1 and p.stats["errors"] == 1


def test_upstream_down_without_cache_is_502(proxy, mirror):
    p, port = proxy
    mirror.down = True
    status, _headers, body = get(port, "/debian/dists/bookworm/InRelease")
    assert status == 502 and b"upstream" in body
    status, _, _ = get(port, "/debian/pool/main/h/hello/hello_1_amd64.deb")
    assert status == 502
    assert not (p.cache_dir / "debian/pool/main/h/hello/hello_1_amd64.deb").exists()


def test_unreachable_upstream_is_502(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    p = AptProxy(tmp_path, {"debian": f"http://127.0.0.1:{dead}/debian"}, timeout=2)
    with p.loopback() as port:
        assert get(port, "/debian/pool/main/x/x.deb")[0] == 502
    assert p.stats["errors"] == 1


def test_not_found_passes_through_and_is_not_cached(proxy):
    p, port = proxy
    status, _headers, _ = get(port, "/debian/dists/bookworm/main/i18n/Translation-de")
    assert status == 404
    assert not (p.cache_dir / "debian/dists/bookworm/main/i18n/Translation-de").exists()


def test_fresh_window_answers_without_upstream(tmp_path, mirror):
    p = AptProxy(tmp_path, {"debian": f"{mirror.url}/debian"}, fresh_seconds=60)
    with p.loopback() as port:
        get(port, "/debian/dists/bookworm/InRelease")
        before = len(mirror.requests)
        assert get(port, "/debian/dists/bookworm/InRelease")[1]["x-antrieb-cache"] == "HIT"
        assert len(mirror.requests) == before


def test_client_if_modified_since_gets_304(proxy):
    _, port = proxy
    get(port, "/debian/dists/bookworm/InRelease")
    status, _headers, body = get(port, "/debian/dists/bookworm/InRelease",
                                headers={"If-Modified-Since": LAST_MODIFIED})
    assert status == 304 and body == b""


def test_client_as_new_as_the_mirror_gets_304_also_when_the_proxy_fetched_again(proxy):
    # the proxy's copy is gone or stale, so it fetches the whole index (200 upstream);
    # the client's copy is as new: it gets 304 (apt keeps its lists), and the index is
    # cached for the next client
    p, port = proxy
    status, _headers, body = get(port, "/debian/dists/bookworm/InRelease",
                                headers={"If-Modified-Since": LAST_MODIFIED})
    assert status == 304 and body == b""
    assert (p.cache_dir / "debian/dists/bookworm/InRelease").exists()
    status, _headers, body = get(port, "/debian/dists/bookworm/InRelease")
    assert status == 200 and body


def test_mirror_without_validators_proxy_dates_the_index_and_answers_304(proxy, mirror):
    # This host's mirror path sends neither ETag nor Last-Modified. The proxy dates each
    # index by when it first saw those bytes, so apt's If-Modified-Since gets a 304 (apt
    # keeps its lists) until the bytes change; it never sends its own date upstream as
    # if the mirror had made it.
    mirror.validators = False
    _, port = proxy
    target = "/debian/dists/bookworm/InRelease"
    status, headers, body = get(port, target)
    assert status == 200 and body == mirror.files[target]
    dated = headers["last-modified"]
    for _ in range(2):  # the proxy fetches again each time (fresh_seconds=0)
        status, headers, body = get(port, target, headers={"If-Modified-Since": dated})
        assert (status, body) == (304, b"")
    assert get(port, target)[1]["last-modified"] == dated
    mirror.files[target] = b"Origin: Debian\nSuite: newer\n"  # changed in the same second
    status, headers, body = get(port, target, headers={"If-Modified-Since": dated})
    assert (status, body) == (200, b"Origin: Debian\nSuite: newer\n")
    assert headers["last-modified"] != dated
    status, _, body = get(port, target, headers={"If-Modified-Since": headers["last-modified"]})
    assert (status, body) == (304, b"")
    assert not any(mirror.conditional)


def test_mirror_with_validators_keeps_its_own_dates(proxy, mirror):
    _, port = proxy
    target = "/debian/dists/bookworm/InRelease"
    assert get(port, target)[1]["last-modified"] == LAST_MODIFIED
    get(port, target)
    assert mirror.conditional[-1]  # revalidated upstream with the mirror's own validators


@pytest.mark.parametrize("method,target", [
    ("GET", "http://deb.example/debian/pool/main/h/hello/hello_1_amd64.deb"),
    ("GET", "http://apt.antrieb:8080/debian/dists/bookworm/InRelease"),
    ("GET", "https://apt.antrieb/debian/dists/bookworm/InRelease"),
    ("GET", "/elsewhere/dists/bookworm/InRelease"),
    ("GET", "/debian/dists/../../etc/passwd"),
    ("GET", "/debian/dists/%2e%2e/%2e%2e/etc/passwd"),
    ("GET", "/debian"),
    ("GET", "/debian/dists/bookworm/.InRelease.meta"),
    ("GET", "/debian//dists/bookworm/InRelease"),
    ("POST", "/debian/dists/bookworm/InRelease"),
    ("DELETE", "/debian/dists/bookworm/InRelease"),
    ("CONNECT", "deb.example:443"),
])
def test_denied(proxy, mirror, method, target):
    p, port = proxy
    status, _headers, body = get(port, target, method=method)
    assert status == 403, body
    assert body.startswith(b"antrieb apt proxy:")
    assert p.stats["denied"] == 1
    assert mirror.requests == []
    assert log_lines(p, 1)[-1]["cache"] == "DENIED"


def test_head_does_not_cache(proxy):
    p, port = proxy
    status, headers, body = get(port, "/debian/pool/main/h/hello/hello_1_amd64.deb", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(DEB))
    assert not (p.cache_dir / "debian/pool/main/h/hello/hello_1_amd64.deb").exists()


def _cache_leftovers(root: Path) -> list[Path]:
    return [f for f in root.rglob("*") if f.is_file() and f.name != "access.log"]


def test_client_disconnect_leaves_no_partial_file(proxy, mirror):
    p, port = proxy
    mirror.slow = True
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /debian/pool/main/b/big/big_1_amd64.deb HTTP/1.1\r\nHost: x\r\n\r\n")
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert wait_for(lambda: any(line["cache"] == "ABORTED" for line in log_lines(p)))
    assert p.stats["aborted"] == 1 and p.stats["errors"] == 0
    assert _cache_leftovers(p.cache_dir) == []
    # a later complete request caches it whole
    mirror.slow = False
    status, headers, body = get(port, "/debian/pool/main/b/big/big_1_amd64.deb")
    assert (status, headers["x-antrieb-cache"], len(body)) == (200, "MISS", len(BIG))
    assert (p.cache_dir / "debian/pool/main/b/big/big_1_amd64.deb").stat().st_size == len(BIG)


def test_truncated_upstream_leaves_no_cache_file(proxy, mirror):
    p, port = proxy
    mirror.truncate = True
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/debian/pool/main/h/hello/hello_1_amd64.deb")
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert wait_for(lambda: p.stats["errors"] == 1)
    assert _cache_leftovers(p.cache_dir) == []


def test_keep_alive_serves_several_requests(proxy):
    _, port = proxy
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(3):
        conn.request("GET", "http://apt.antrieb/debian/pool/main/h/hello/hello_1_amd64.deb")
        resp = conn.getresponse()
        assert resp.read() == DEB
    conn.close()


def test_serve_on_given_socket_until_close(tmp_path, mirror):
    p = AptProxy(tmp_path, {"debian": f"{mirror.url}/debian"})
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    t = threading.Thread(target=p.serve, args=(sock,), daemon=True)
    t.start()
    assert get(port, "/debian/dists/bookworm/InRelease")[0] == 200
    # an idle keep-alive client must not keep close() waiting
    idle = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.1)
    p.close()
    t.join(5)
    assert not t.is_alive()
    idle.close()
    sock.close()


def test_injected_fault_answers_then_serves_again(proxy, tmp_path, monkeypatch):
    # ANTRIEB_APT_FAULT: the mirror fails on purpose (tests of class infrastructure)
    _, port = proxy
    fault = tmp_path / "fault"
    fault.write_text("502 2")
    monkeypatch.setenv("ANTRIEB_APT_FAULT", str(fault))
    url = "http://apt.antrieb/debian/pool/main/h/hello/hello_1_amd64.deb"
    assert [get(port, url)[0] for _ in range(3)] == [502, 502, 200]
    assert fault.read_text().split() == ["502", "0"]


def test_injected_fault_only_for_paths_with_its_part(proxy, tmp_path, monkeypatch):
    _, port = proxy
    fault = tmp_path / "fault"
    fault.write_text("502 1 /pool/")
    monkeypatch.setenv("ANTRIEB_APT_FAULT", str(fault))
    index = "http://apt.antrieb/debian/dists/bookworm/InRelease"
    deb = "http://apt.antrieb/debian/pool/main/h/hello/hello_1_amd64.deb"
    assert get(port, index)[0] != 502  # package lists are served
    assert [get(port, deb)[0] for _ in range(2)] == [502, 200]
    assert fault.read_text().split() == ["502", "0", "/pool/"]
