"""SSH to one node: one paramiko transport, opened once and reused (key exchange costs
~2 s in an emulated guest), commands with a timeout and capped output.
"""

from __future__ import annotations

import io
import shlex
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from antrieb.errors import NodeError

DEFAULT_OUTPUT_CAP = 1 << 20  # per stream; head and tail are kept, the middle is dropped
KILL_GRACE = 5.0


class Result(BaseModel):
    """What one remote command did."""

    node: str
    command: str
    exit_status: int | None  # None when killed by the timeout
    stdout: str
    stderr: str
    seconds: float
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def __str__(self) -> str:
        return f"[{self.node}] $ {self.command} -> {self.exit_status} ({self.seconds:.2f}s)"


class CappedBuffer:
    """Keeps the first and last ``cap/2`` bytes of a stream; memory never exceeds cap."""

    def __init__(self, cap: int):
        self.half = max(1, cap // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.half:
                extra = len(self.tail) - self.half
                self.dropped += extra
                del self.tail[:extra]

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self) -> str:
        if not self.dropped:
            return (self.head + self.tail).decode(errors="replace")
        marker = f"\n[... antrieb dropped {self.dropped} bytes of output ...]\n"
        return self.head.decode(errors="replace") + marker + self.tail.decode(errors="replace")


class ClusterKey:
    """A fresh Ed25519 keypair in OpenSSH formats: the cluster's login key, or a node's
    own host key (``comment`` names which)."""

    def __init__(self, comment: str = "antrieb-cluster") -> None:
        key = Ed25519PrivateKey.generate()
        self.private_openssh = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()).decode()
        self.public_openssh = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode() + f" {comment}"
        self.pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(self.private_openssh))


class NodeSession:
    """Commands and files on one node over one reused SSH transport."""

    def __init__(self, node: str, connect: Callable[[], socket.socket], key: ClusterKey,
                 host_key: str | None = None, user: str = "root"):
        self.node, self._connect, self._key, self.user = node, connect, key, user
        self._host_key = host_key
        self._transport: paramiko.Transport | None = None
        self._connecting: paramiko.Transport | None = None
        self._closed = False
        self._lock = threading.Lock()

    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._closed:
                raise NodeError(f"{self.node}: the session is closed (cluster torn down)")
            if self._transport is not None and self._transport.is_active():
                return self._transport
            try:
                t = paramiko.Transport(self._connect())
                self._connecting = t
                t.start_client(timeout=60)
                self._check_host_key(t.get_remote_server_key())
                t.auth_publickey(self.user, self._key.pkey)
                t.set_keepalive(30)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise NodeError(f"{self.node}: SSH connection failed: {exc}") from exc
            finally:
                self._connecting = None
            self._transport = t
            return t

    def _check_host_key(self, key: paramiko.PKey) -> None:
        if not self._host_key:
            return
        parts = self._host_key.split()
        if len(parts) >= 2 and (key.get_name() != parts[0]
                                or key.get_base64() != parts[1]):
            raise NodeError(f"{self.node}: unexpected SSH host key {key.get_name()}")

    def run(self, command: str, timeout: float = 600.0,
            output_cap: int = DEFAULT_OUTPUT_CAP) -> Result:
        """Run ``command`` with bash; killed (whole process group) after ``timeout``."""
        # coreutils `timeout` kills the command's whole process group in the guest; the
        # host-side deadline below is the backstop if the guest itself stops answering.
        remote = (f"timeout -s KILL {max(1, int(timeout + 0.999))} "
                  f"bash -c {shlex.quote(command)} </dev/null")
        out, err = CappedBuffer(output_cap), CappedBuffer(output_cap)
        t0 = time.monotonic()
        chan = self.transport().open_session(timeout=30)
        try:
            chan.settimeout(0.2)
            chan.exec_command(remote)
            deadline = t0 + timeout + KILL_GRACE
            timed_out = False
            while True:
                got = False
                while chan.recv_ready():
                    out.add(chan.recv(65536))
                    got = True
                while chan.recv_stderr_ready():
                    err.add(chan.recv_stderr(65536))
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                if not got:
                    try:
                        data = chan.recv(65536)
                        if data:
                            out.add(data)
                        else:  # stdout closed; the exit status is on its way
                            time.sleep(0.01)
                    except TimeoutError:
                        pass
            seconds = time.monotonic() - t0
            status = None if timed_out else chan.recv_exit_status()
        finally:
            chan.close()
        if status == 137 and seconds >= timeout - 0.5:  # SIGKILL from `timeout`
            timed_out, status = True, None
        return Result(node=self.node, command=command, exit_status=status,
                      stdout=out.text(), stderr=err.text(), seconds=seconds,
                      truncated=out.truncated or err.truncated, timed_out=timed_out)

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        payload = data.encode() if isinstance(data, str) else data

        def write(sftp: paramiko.SFTPClient) -> None:
            f = sftp.open(path, "wb")  # no `with`: its exit would wait for the node
            f.write(payload)
            f.close()
            sftp.chmod(path, mode)

        self._with_sftp(write)

    def get(self, path: str) -> bytes:
        def read(sftp: paramiko.SFTPClient) -> bytes:
            f = sftp.open(path, "rb")
            data = f.read()
            f.close()
            return data

        return self._with_sftp(read)

    def _with_sftp(self, work: Callable[[paramiko.SFTPClient], Any]) -> Any:
        """``work(sftp)``; on Ctrl-C the channel is dropped, not closed in order: an
        orderly close waits for the node to answer, and a stopped run must not wait."""
        sftp = self._sftp()
        try:
            result = work(sftp)
        except BaseException:
            sftp.get_channel().close()  # sends the close, waits for nothing
            raise
        sftp.close()
        return result

    def _sftp(self) -> paramiko.SFTPClient:
        try:
            client = paramiko.SFTPClient.from_transport(self.transport())
        except paramiko.SSHException as exc:
            raise NodeError(f"{self.node}: SFTP failed: {exc}") from exc
        if client is None:
            raise NodeError(f"{self.node}: SFTP subsystem refused")
        return client

    def drop(self) -> None:
        """Forget the connection (its node rebooted): the next command connects anew."""
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    def close(self) -> None:
        """Close for good. Never waits for a handshake in progress: its socket is closed
        under it (a dead VM sends no reset, the handshake would wait out its timeout)."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            connecting.close()
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

