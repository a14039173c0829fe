"""Knowing that a node's sshd answers, and keeping the connection that found out.

A node is ready when sshd sends its banner. Closing that probe connection makes the
guest's sshd log a failed connection through journald: emulated work under TCG, done
while the other nodes of the cluster still come up. So a restored clone's probe stays
open, its banner only peeked at, and becomes the node's first SSH session.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

# sshd drops a connection that has not authenticated after LoginGraceTime (120 s by
# default); older probes are not handed out.
PROBE_MAX_AGE = 90.0


def wait_ssh_banner(ip: str, deadline: float) -> tuple[float, socket.socket]:
    """Poll until sshd on ip:22 sends its banner. Returns the time it did and the
    connection, with the banner still unread (peeked), so an SSH client can start on it."""
    while True:
        sock = None
        try:
            sock = socket.create_connection((ip, 22), timeout=1.0)
            sock.settimeout(max(0.2, deadline - time.monotonic()))
            if sock.recv(64, socket.MSG_PEEK).startswith(b"SSH-"):
                return time.monotonic(), sock
        except OSError:
            pass
        if sock is not None:
            sock.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"sshd on {ip} did not answer")
        time.sleep(0.02)


def _peer_gone(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


class SshProbes:
    """Probe connections kept per node IP until the node's first SSH session takes one."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[socket.socket, float]] = {}
        self._lock = threading.Lock()

    def keep(self, ip: str, sock: socket.socket) -> None:
        with self._lock:
            old = self._kept.pop(ip, None)
            self._kept[ip] = (sock, time.monotonic())
        if old is not None:
            old[0].close()

    def take(self, ip: str) -> socket.socket | None:
        """The kept connection to ip:22 if it is young and sshd still holds it, blocking."""
        with self._lock:
            item = self._kept.pop(ip, None)
        if item is None:
            return None
        sock, since = item
        if time.monotonic() - since < PROBE_MAX_AGE and not _peer_gone(sock):
            sock.settimeout(None)
            return sock
        sock.close()
        return None

    def drop(self, ips: list[str] | None = None) -> None:
        """Close the kept connections to ips (all when None)."""
        with self._lock:
            gone = [self._kept.pop(ip) for ip in list(self._kept)
                    if ips is None or ip in ips]
        for sock, _since in gone:
            with contextlib.suppress(OSError):
                sock.close()
