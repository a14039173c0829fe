"""The process that owns one cluster, what both drivers' supervisors share: the
namespaces, the bridge and taps, the apt proxy, the watchdog on the owner, and the
control protocol. :mod:`antrieb.vm.qemu.supervisor` starts QEMU itself;
:mod:`antrieb.vm.libvirt.supervisor` starts domains through a libvirt connection.

Why a separate process: it can enter fresh namespaces without touching the caller, and
its death takes everything with it. A watchdog thread acts the moment the control
socket hangs up, i.e. the owner died, even by ``kill -9``; then the kernel reaps the
network namespace (bridge, taps) and the mount namespace (the tmpfs holding overlays
and consoles).

Protocol: SOCK_SEQPACKET messages, one JSON object each; ``connect`` replies carry a
TCP socket opened inside the cluster network as an SCM_RIGHTS file descriptor.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from antrieb.vm.guest.client import AgentClient
from antrieb.vm.guest.sshprobe import SshProbes, wait_ssh_banner
from antrieb.vm.net import namespaces
from antrieb.vm.net import plan as netplan

MAX_MESSAGE = 1 << 20
CONSOLE_TAIL = 16 * 1024


def console_tail(path: str | Path, limit: int = CONSOLE_TAIL) -> str:
    """The last ``limit`` bytes of a VM's serial console file, as text."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class VMFailure(Exception):
    def __init__(self, node: str, message: str, console: str = "", kind: str = "vm"):
        super().__init__(message)
        self.node, self.console, self.kind = node, console, kind


class Supervisor:
    """Serves one owner's requests (``op_<name>`` methods) until it hangs up. A driver's
    supervisor adds launch, snapshot, agent, console, stats and kill."""

    def __init__(self, control: socket.socket, runtime: Path):
        self.control = control
        self.runtime = runtime
        self.taps: list[str] = []
        self.probes = SshProbes()  # restored nodes' first SSH connections

    def _kill(self, names: list[str]) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def _keep_probe(self, ip: str, probe: socket.socket, *, restored: bool) -> None:
        # A cold-booted VM may become a golden snapshot: no half-open sshd session in it.
        if restored:
            self.probes.keep(ip, probe)
        else:
            probe.close()

    @staticmethod
    def _bring_up_all(jobs: dict[str, tuple], console_tail: Callable[[str], str]) -> dict:
        """Run each node's bring-up ``(fn, *args)`` in parallel; the reply names every
        node that failed, with its console tail."""
        results: dict[str, Any] = {}
        errors: list[VMFailure] = []
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = {name: pool.submit(*job) for name, job in jobs.items()}
            for name, fut in futures.items():
                try:
                    results[name] = fut.result()
                except VMFailure as exc:
                    errors.append(exc)
                except Exception as exc:
                    errors.append(VMFailure(name, f"{type(exc).__name__}: {exc}",
                                            console_tail(name)))
        if errors:
            return {"ok": False, "errors": [
                {"node": e.node, "message": str(e), "console": e.console, "kind": e.kind}
                for e in errors], "nodes": results}
        return {"ok": True, "nodes": results}

    def _agent(self, name: str) -> AgentClient:
        raise NotImplementedError

    def _console(self, name: str) -> str:
        raise NotImplementedError

    def op_await_boot(self, nodes: list[dict], timeout: float) -> dict:
        """After the guests were told to reboot (``nodes``: name, ip, old_boot_id): wait,
        in parallel, until each agent answers from a new boot (the identity kept on its
        disk re-applied) and its sshd sends the banner."""
        t0 = time.monotonic()
        return self._bring_up_all(
            {n["name"]: (self._await_one, n["name"], n["ip"], n["old_boot_id"], t0, timeout)
             for n in nodes}, self._console)

    def _await_one(self, name: str, ip: str, old_boot_id: str, t0: float,
                   timeout: float) -> dict:
        deadline = t0 + timeout
        agent = self._agent(name)
        while True:
            try:
                wait = max(0.5, min(5.0, deadline - time.monotonic()))
                if agent.call("ping", timeout=wait).get("boot_id") not in ("", old_boot_id):
                    break
            except Exception:  # going down, or not up yet: no agent to answer
                pass
            if time.monotonic() > deadline:
                raise VMFailure(name, f"did not come back from its reboot in {timeout:.0f}s",
                                kind="boot_timeout")
            time.sleep(0.2)
        agent_s = time.monotonic() - t0
        try:
            answered, probe = wait_ssh_banner(ip, deadline)
        except TimeoutError as exc:
            raise VMFailure(name, f"sshd did not answer after the reboot: {exc}") from exc
        self._keep_probe(ip, probe, restored=True)
        return {"agent_s": agent_s, "ssh_s": answered - t0}

    def op_connect(self, ip: str, port: int, timeout: float = 10.0) -> tuple[dict, list[int]]:
        if port == 22 and (probe := self.probes.take(ip)) is not None:
            return {"ok": True, "probe": True}, [probe.detach()]
        sock = socket.create_connection((ip, port), timeout=timeout)
        sock.settimeout(None)
        return {"ok": True}, [sock.detach()]

    def op_stop(self, names: list[str]) -> dict:
        self._kill(names)
        return {"ok": True}

    # -- the control loop ---------------------------------------------------------

    def send(self, msg: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(msg).encode()
        if fds:
            socket.send_fds(self.control, [data], fds)
            for fd in fds:
                os.close(fd)
        else:
            self.control.send(data)

    def serve(self) -> None:
        while True:
            try:
                data = self.control.recv(MAX_MESSAGE)
            except OSError:
                return
            if not data:
                return
            req = json.loads(data)
            op = req.pop("op")
            if op == "shutdown":
                self.shutdown()
                self.send({"ok": True})
                return
            fds: list[int] = []
            try:
                result = getattr(self, f"op_{op}")(**req)
                if isinstance(result, tuple):
                    result, fds = result
            except VMFailure as exc:
                result = {"ok": False, "errors": [{"node": exc.node, "message": str(exc),
                                                   "console": exc.console, "kind": exc.kind}]}
            except Exception as exc:
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                          "trace": traceback.format_exc(limit=5)}
            self.send(result, fds)


def _watch_owner(control: socket.socket, owner_gone: Callable[[], None]) -> None:
    """Call ``owner_gone`` the moment the owner's end of the control socket closes."""
    poller = select.poll()
    poller.register(control.fileno(), select.POLLRDHUP | select.POLLHUP)
    while True:
        for _, events in poller.poll():
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                owner_gone()


def _proxy_thread(listen: queue.Queue, apt_cache: str, upstreams: dict[str, str]) -> None:
    """Serve the apt proxy. Started before the network unshare, so this thread and the
    workers it starts stay in the host's network and can reach the mirror, while the
    listening socket it is handed lives in the cluster's network."""
    sock = listen.get()
    # The first apt request comes after the cluster is up: the proxy's imports wait for
    # it instead of competing with the start for the interpreter.
    select.select([sock], [], [])
    from antrieb.vm.net.aptproxy import AptProxy

    AptProxy(Path(apt_cache), upstreams).serve(sock)


def run(argv: list[str] | None, *, prog: str,
        owner_gone: Callable[[list[Supervisor]], None],
        make: Callable[[socket.socket, Path], Supervisor],
        before_network: Callable[[], None] = lambda: None) -> int:
    """A supervisor process's life: private mounts, the watchdog and the apt proxy
    thread, the private network, then ``make(control, runtime)`` serves until the owner
    hangs up. ``owner_gone(box)`` runs on the watchdog thread (``box`` holds the
    supervisor once made); ``before_network`` runs while still in the host's network."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--runtime", required=True, help="mountpoint for the private tmpfs")
    parser.add_argument("--apt-cache", default="")
    parser.add_argument("--upstreams", default="{}", help="JSON archive -> mirror URL")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides; Ctrl-C reaches it
    box: list[Supervisor] = []
    try:
        namespaces.enter_private_mounts(args.runtime)
        threading.Thread(target=_watch_owner, args=(control, lambda: owner_gone(box)),
                         daemon=True).start()
        before_network()
        listen: queue.Queue = queue.Queue()
        upstreams = json.loads(args.upstreams)
        if args.apt_cache and upstreams:
            threading.Thread(target=_proxy_thread, args=(listen, args.apt_cache, upstreams),
                             daemon=True).start()
        namespaces.enter_private_network()
        proxy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        proxy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        proxy.bind((netplan.GATEWAY_IP, netplan.PROXY_PORT))
        proxy.listen(64)
        listen.put(proxy)
        sup = make(control, Path(args.runtime))
        box.append(sup)
    except Exception as exc:
        control.send(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                 "trace": traceback.format_exc(limit=5)}).encode())
        return 1
    sup.send({"ok": True, "pid": os.getpid()})
    try:
        sup.serve()
    finally:
        sup.shutdown()
    # no interpreter teardown (daemon threads, module cleanup): the owner waits for us
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
