"""The probe that finds a node's sshd answering, kept as the node's first connection.
Against a local TCP server speaking the first line of SSH (sshd is not under test)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from antrieb.vm.guest import sshprobe
from antrieb.vm.guest.sshprobe import SshProbes, wait_ssh_banner
from tests.timebounds import within

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"


@pytest.fixture
def fake_sshd():
    """Listens on 127.0.0.1; sends the banner to each connection and keeps it open until
    told to hang up."""
    server = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            # Kept before the banner goes out: once a client has read it, the test and
            # the teardown below see this connection (appended after sendall, teardown
            # could miss it and its ResourceWarning failed whichever test ran next).
            conns.append(conn)
            conn.sendall(BANNER)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], conns
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone may not
    server.close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the fake sshd's accept loop did not stop"
    for conn in conns:
        conn.close()


@pytest.fixture
def port22(monkeypatch, fake_sshd):
    """wait_ssh_banner speaks to port 22: point it at the fake."""
    port, conns = fake_sshd
    real = socket.create_connection
    monkeypatch.setattr(sshprobe.socket, "create_connection",
                        lambda addr, timeout=None: real((addr[0], port), timeout=timeout))
    return conns


def test_the_banner_stays_unread_for_the_ssh_client(port22):
    answered, sock = wait_ssh_banner("127.0.0.1", time.monotonic() + 5)
    try:
        assert answered <= time.monotonic()
        assert sock.recv(64) == BANNER  # peeked, not consumed
    finally:
        sock.close()


def test_a_kept_probe_is_handed_out_once(port22):
    probes = SshProbes()
    _, sock = wait_ssh_banner("127.0.0.1", time.monotonic() + 5)
    probes.keep("10.77.0.11", sock)
    got = probes.take("10.77.0.11")
    assert got is sock and got.gettimeout() is None
    assert probes.take("10.77.0.11") is None
    got.close()


def test_a_probe_the_server_hung_up_is_not_handed_out(port22):
    probes = SshProbes()
    _, sock = wait_ssh_banner("127.0.0.1", time.monotonic() + 5)
    probes.keep("10.77.0.11", sock)
    port22[0].shutdown(socket.SHUT_RDWR)
    time.sleep(0.05)
    assert probes.take("10.77.0.11") is None
    assert sock.fileno() == -1  # closed, not leaked


def test_an_old_probe_is_not_handed_out(port22, monkeypatch):
    probes = SshProbes()
    _, sock = wait_ssh_banner("127.0.0.1", time.monotonic() + 5)
    probes.keep("10.77.0.11", sock)
    later = time.monotonic() + sshprobe.PROBE_MAX_AGE + 1
    monkeypatch.setattr(sshprobe.time, "monotonic", lambda: later)
    assert probes.take("10.77.0.11") is None
    assert sock.fileno() == -1


def test_drop_closes_only_the_named_nodes(port22):
    probes = SshProbes()
    socks = {ip: wait_ssh_banner("127.0.0.1", time.monotonic() + 5)[1]
             for ip in ("10.77.0.11", "10.77.0.12")}
    for ip, sock in socks.items():
        probes.keep(ip, sock)
    probes.drop(["10.77.0.11"])
    assert socks["10.77.0.11"].fileno() == -1
    assert probes.take("10.77.0.12") is socks["10.77.0.12"]
    socks["10.77.0.12"].close()
    probes.drop()


def test_no_sshd_is_a_timeout_not_a_hang():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        port = silent.getsockname()[1]
        real = socket.create_connection
        t0 = time.monotonic()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sshprobe.socket, "create_connection",
                       lambda addr, timeout=None: real(("127.0.0.1", port), timeout=timeout))
            with pytest.raises(TimeoutError, match="did not answer"):
                wait_ssh_banner("127.0.0.1", time.monotonic() + 0.5)
        within("0.5 s banner timeout -> TimeoutError", time.monotonic() - t0, goal=1.0,
               bound=10)
