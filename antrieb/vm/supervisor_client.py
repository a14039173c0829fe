"""The owner's handle on a supervisor process (see :mod:`antrieb.vm.supervisor`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from antrieb import config
from antrieb.errors import SupervisorError

MAX_MESSAGE = 1 << 20


def runtime_mountpoint() -> str:
    """An empty folder every supervisor mounts its private tmpfs on (in its own mount
    namespace, so the host never sees what is inside and nothing is left after a crash)."""
    path = config.cache_dir() / "runtime"
    path.mkdir(exist_ok=True)
    return str(path)


class SupervisorClient:
    """Starts a supervisor and sends it requests, one at a time."""

    def __init__(self, *, apt_cache: str = "", upstreams: dict[str, str] | None = None,
                 start_timeout: float = 30.0,
                 on_spawn: Callable[[SupervisorClient], None] | None = None,
                 module: str = "antrieb.vm.qemu.supervisor"):
        """``on_spawn(self)`` runs once the process exists, before it is ready: an owner
        that registers the client there can :meth:`kill` it during the start."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        self._lock = threading.Lock()
        self._interrupted = False
        # -S and our own sys.path: the site module (and an editable install's import
        # hook) cost ~20 ms of a start that every Cluster.up() waits for.
        argv = [sys.executable, "-S", "-m", module,  # the libvirt driver runs its own
                "--control-fd", str(theirs.fileno()), "--runtime", runtime_mountpoint(),
                "--apt-cache", apt_cache, "--upstreams", json.dumps(upstreams or {})]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            dict.fromkeys(p for p in [str(config.REPO_ROOT), *sys.path] if p))
        # start_new_session: a Ctrl-C in the owner's terminal reaches the owner, which
        # then tears down in order, instead of killing the supervisor half-way.
        self.proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid: int = self.proc.pid  # known from here on: an owner may kill it starting
        theirs.close()
        if on_spawn is not None:
            on_spawn(self)
        hello = self._recv(start_timeout)
        if not hello.get("ok"):
            self.kill()
            raise SupervisorError(f"supervisor did not start: {hello.get('error')}\n"
                                  f"{hello.get('trace', '')}")

    def _recv(self, timeout: float | None) -> dict[str, Any]:
        msg, _fds = self._recv_fds(timeout)
        return msg

    def _recv_fds(self, timeout: float | None) -> tuple[dict[str, Any], list[int]]:
        self._sock.settimeout(timeout)
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._sock, MAX_MESSAGE, 4)
        except TimeoutError:
            raise SupervisorError(f"supervisor did not answer in {timeout}s") from None
        except OSError as exc:
            raise SupervisorError(f"supervisor connection failed: {exc}") from exc
        if not data:
            code = self.proc.poll()
            raise SupervisorError(f"supervisor exited (code {code})")
        return json.loads(data), fds

    def request(self, op: str, wait: float | None = 600.0, **args: Any) -> dict[str, Any]:
        msg, fds = self.request_fds(op, wait, **args)
        for fd in fds:
            os.close(fd)
        return msg

    def request_fds(self, op: str, wait: float | None = 600.0,
                    **args: Any) -> tuple[dict[str, Any], list[int]]:
        with self._lock:
            try:
                self._sock.send(json.dumps({"op": op, **args}).encode())
                return self._recv_fds(wait)
            except OSError as exc:
                self._interrupted = True
                raise SupervisorError(f"supervisor gone: {exc}") from exc
            except BaseException:
                # A reply may still be on its way: the channel is out of step for good.
                self._interrupted = True
                raise

    def connect(self, ip: str, port: int, timeout: float = 10.0) -> socket.socket:
        """A TCP socket connected to ip:port inside the cluster's network."""
        msg, fds = self.request_fds("connect", timeout + 5, ip=ip, port=port, timeout=timeout)
        if not msg.get("ok") or not fds:
            for fd in fds:
                os.close(fd)
            raise SupervisorError(f"connect {ip}:{port}: {msg.get('error')}")
        return socket.socket(fileno=fds[0])

    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask for an orderly stop; kill if it does not come in time. Idempotent."""
        if self._interrupted:
            self.kill()
            return
        if self.proc.poll() is None:
            got = self._lock.acquire(timeout=0.5)
            try:
                if got:
                    with contextlib.suppress(OSError, SupervisorError):
                        self._sock.send(b'{"op": "shutdown"}')
                        self._recv(timeout)
            finally:
                if got:
                    self._lock.release()
            if not got:  # another thread is mid-request: don't wait for it
                self.kill()
                return
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_group()  # nothing of the group outlives an orderly stop either
        self._sock.close()

    def kill(self) -> None:
        """Kill the supervisor and its VMs at once; the namespaces die with them."""
        self._kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._sock.close()

    def _kill_group(self) -> None:
        # The supervisor leads its own session (start_new_session), and its QEMUs are in
        # that process group. Killing the group does not rely on their PDEATHSIG, which
        # a QEMU still being spawned has not set yet (seen: an orphaned QEMU).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc.poll() is None


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False
