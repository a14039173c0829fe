"""The process that owns one cluster: its namespaces, bridge, taps, QEMU processes and
apt proxy. Run as ``python -m antrieb.vm.supervisor`` by the qemu driver.

Why a separate process: it can enter fresh namespaces without touching the caller, and
its death takes everything with it. QEMU children get ``PDEATHSIG=KILL`` (through
``setpriv``, exec'd from this process's main thread, because the kernel ties the death
signal to the *thread* that forked); a watchdog thread exits the moment the control
socket hangs up, i.e. the owner died, even by ``kill -9``; then the kernel reaps the
network namespace (bridge, taps) and the mount namespace (the tmpfs holding overlays
and consoles).

Protocol: SOCK_SEQPACKET messages, one JSON object each; ``connect`` replies carry a
TCP socket opened inside the cluster network as an SCM_RIGHTS file descriptor.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from antrieb.vm import namespaces, netplan
from antrieb.vm.agent_client import AgentClient
from antrieb.vm.procfs import stat_fields
from antrieb.vm.qemu import qemu_argv, qemu_binary
from antrieb.vm.spec import Identity, VMSpec
from antrieb.vm.sshprobe import SshProbes, wait_ssh_banner

if TYPE_CHECKING:
    from qemu.qmp.legacy import QEMUMonitorProtocol

MAX_MESSAGE = 1 << 20
CONSOLE_TAIL = 16 * 1024


@dataclass
class RunningVM:
    spec: VMSpec
    proc: subprocess.Popen
    qmp_sock: socket.socket
    agent: AgentClient
    console: Path
    state_fd: int | None = None  # the fd number QEMU inherited the golden state as
    ip: str = ""  # set with its identity
    timings: dict[str, float] = field(default_factory=dict)

    def console_tail(self, limit: int = CONSOLE_TAIL) -> str:
        try:
            with open(self.console, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class VMFailure(Exception):
    def __init__(self, node: str, message: str, console: str = "", kind: str = "vm"):
        super().__init__(message)
        self.node, self.console, self.kind = node, console, kind


class Supervisor:
    def __init__(self, control: socket.socket, runtime: Path):
        self.control = control
        self.runtime = runtime
        self.vms: dict[str, RunningVM] = {}
        self.taps: list[str] = []
        self.probes = SshProbes()  # restored nodes' first SSH connections
        self.qemu = qemu_binary()
        self.setpriv = shutil.which("setpriv")
        # QEMU puts snapshot=on overlays in $TMPDIR: the private tmpfs, gone with us.
        self.qemu_env = {**os.environ, "TMPDIR": str(runtime)}

    # -- lifecycle of processes -------------------------------------------------

    def _spawn(self, spec: VMSpec) -> RunningVM:
        """Start QEMU for spec. Must run on the main thread (PDEATHSIG is per thread)."""
        console = self.runtime / f"{spec.name}.console"
        mon_ours, mon_theirs = socket.socketpair()
        ag_ours, ag_theirs = socket.socketpair()
        state_fd = os.open(spec.incoming, os.O_RDONLY) if spec.incoming else None
        argv = qemu_argv(spec, monitor_fd=mon_theirs.fileno(),
                         agent_fd=ag_theirs.fileno(), console_path=str(console),
                         incoming_fd=state_fd, binary=self.qemu)
        prefix = [self.setpriv, "--pdeathsig", "KILL", "--"] if self.setpriv else []
        inherited = [mon_theirs.fileno(), ag_theirs.fileno()]
        if state_fd is not None:
            inherited.append(state_fd)
        try:
            with open(self.runtime / f"{spec.name}.stderr", "wb") as stderr:
                proc = subprocess.Popen(prefix + argv, pass_fds=inherited,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=stderr, env=self.qemu_env)
        finally:
            mon_theirs.close()
            ag_theirs.close()
            if state_fd is not None:
                os.close(state_fd)
        vm = RunningVM(spec, proc, mon_ours, AgentClient(ag_ours), console, state_fd)
        self.vms[spec.name] = vm
        return vm

    def _failure(self, vm: RunningVM, message: str, kind: str = "vm") -> VMFailure:
        tail = vm.console_tail()
        if vm.proc.poll() is not None:
            with contextlib.suppress(OSError):
                err = (self.runtime / f"{vm.spec.name}.stderr").read_text(errors="replace")
                if err.strip():
                    message += f" (qemu exited {vm.proc.returncode}: {err.strip()[-1500:]})"
        return VMFailure(vm.spec.name, message, tail, kind)

    def _qmp(self, vm: RunningVM) -> QEMUMonitorProtocol:
        qmp = _qmp_client()(vm.qmp_sock)
        qmp.connect()
        qmp.settimeout(30)
        return qmp

    def _restore(self, vm: RunningVM) -> None:
        """Start loading the golden state; the clone runs by itself once loaded (the golden
        was snapshotted running), and the agent answers only then: no polling here."""
        qmp = self._qmp(vm)
        try:
            qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": "x-ignore-shared", "state": True}])
            qmp.cmd("migrate-incoming", uri=f"fd:{vm.state_fd}")
        finally:
            qmp.close()

    def _identify(self, vm: RunningVM, identity: Identity, timeout: float) -> dict:
        req = identity.agent_request(time.time(), base64.b64encode(os.urandom(64)).decode())
        op = req.pop("op")
        try:
            return vm.agent.call(op, timeout=timeout, **req)
        except Exception as exc:
            raise self._failure(vm, f"identity not applied: {exc}") from exc

    def _bring_up(self, vm: RunningVM, identity: Identity, t0: float, boot_timeout: float) -> dict:
        """After spawn: restore or boot, apply identity, wait for sshd. Runs in a worker."""
        timings: dict[str, Any] = {}
        if vm.spec.incoming:
            self._restore(vm)
            timings["restore_started"] = time.monotonic() - t0
        else:
            try:
                vm.agent.call("ping", timeout=boot_timeout)
            except Exception as exc:
                raise self._failure(vm, f"did not boot in {boot_timeout:.0f}s ({exc})",
                                    kind="boot_timeout") from exc
            timings["running"] = time.monotonic() - t0
        reply = self._identify(vm, identity, timeout=boot_timeout)
        vm.ip = identity.ip
        timings["identity"] = time.monotonic() - t0
        timings["random"] = reply.get("random")
        timings["agent_s"] = reply.get("seconds")
        timings["agent_steps"] = reply.get("steps")
        timings["guest_time"] = reply.get("time")
        try:
            answered, probe = wait_ssh_banner(identity.ip, time.monotonic() + boot_timeout)
        except TimeoutError as exc:
            raise self._failure(vm, str(exc)) from exc
        timings["ssh"] = answered - t0
        self._keep_probe(identity.ip, probe, restored=bool(vm.spec.incoming))
        vm.timings = timings
        return timings

    def _keep_probe(self, ip: str, probe: socket.socket, *, restored: bool) -> None:
        # A cold-booted VM may become a golden snapshot: no half-open sshd session in it.
        if restored:
            self.probes.keep(ip, probe)
        else:
            probe.close()

    # -- operations -------------------------------------------------------------

    def op_launch(self, vms: list[dict], identities: list[dict], boot_timeout: float = 60):
        """Start VMs (restored or cold) in parallel; ready = identity applied + sshd answers."""
        specs = [VMSpec(**v) for v in vms]
        idents = [Identity(**i) for i in identities]
        for spec in specs:
            if spec.name in self.vms:
                raise ValueError(f"VM {spec.name!r} exists already")
        t0 = time.monotonic()
        namespaces.add_taps([s.tap for s in specs])
        self.taps += [s.tap for s in specs]
        started = [self._spawn(spec) for spec in specs]
        spawned = time.monotonic() - t0
        reply = self._bring_up_all(
            {vm.spec.name: (self._bring_up, vm, ident, t0, boot_timeout)
             for vm, ident in zip(started, idents, strict=True)},
            lambda name: self.vms[name].console_tail())
        if reply["ok"]:
            reply.update(spawned_s=spawned, pids={vm.spec.name: vm.proc.pid for vm in started})
        return reply

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

    def op_snapshot(self, name: str, state_path: str) -> dict:
        """Freeze a VM booted with shared RAM and write its device state to state_path."""
        vm = self.vms[name]
        host_key = vm.agent.call("exec", cmd="cat /etc/ssh/ssh_host_ed25519_key.pub")["out"]
        vm.agent.call("sync", timeout=60)
        qmp = self._qmp(vm)
        t0 = time.monotonic()
        try:
            # Not stopped first: a snapshot of a running VM records "running", so clones
            # start by themselves when loaded. Migration pauses it at the end; RAM stays in
            # the shared file, only device state goes to the state file.
            qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": "x-ignore-shared", "state": True}])
            qmp.cmd("migrate", uri=f"exec:cat > {state_path}")
            deadline = time.monotonic() + 60
            while (status := qmp.cmd("query-migrate").get("status")) != "completed":
                if status == "failed" or time.monotonic() > deadline:
                    raise self._failure(vm, f"snapshot {status or 'timed out'}")
                time.sleep(0.01)
        finally:
            qmp.close()
        self._kill([name])
        return {"ok": True, "seconds": time.monotonic() - t0, "host_key": host_key.strip()}

    def op_connect(self, ip: str, port: int, timeout: float = 10.0) -> tuple[dict, list[int]]:
        if port == 22 and (probe := self.probes.take(ip)) is not None:
            return {"ok": True, "probe": True}, [probe.detach()]
        sock = socket.create_connection((ip, port), timeout=timeout)
        sock.settimeout(None)
        return {"ok": True}, [sock.detach()]

    def op_agent(self, name: str, agent_op: str, timeout: float = 30.0, **args: Any) -> dict:
        return {"ok": True, "reply": self.vms[name].agent.call(agent_op, timeout=timeout, **args)}

    def op_console(self, name: str, limit: int = CONSOLE_TAIL) -> dict:
        return {"ok": True, "console": self.vms[name].console_tail(limit)}

    def op_stats(self) -> dict:
        stats = {}
        for name, vm in self.vms.items():
            pid = vm.proc.pid
            rollup: dict[str, int] = {}
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                    key, _, rest = line.partition(":")
                    rollup[key.strip()] = int(rest.split()[0]) * 1024
            fields = stat_fields(pid)
            cpu_s = ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                     if fields else None)
            stats[name] = {"pid": pid, "alive": vm.proc.poll() is None, "memory": rollup,
                           "mem_mb": vm.spec.mem_mb, "cpu_s": cpu_s}
        return {"ok": True, "vms": stats}

    def op_stop(self, names: list[str]) -> dict:
        self._kill(names)
        return {"ok": True}

    def _kill(self, names: list[str], remove_taps: bool = True) -> None:
        vms = [self.vms.pop(n) for n in names if n in self.vms]
        self.probes.drop([vm.ip for vm in vms if vm.ip])
        for vm in vms:
            vm.kill()
        for vm in vms:
            vm.proc.wait()
            vm.agent.close()
            vm.qmp_sock.close()
        taps = [vm.spec.tap for vm in vms]
        if remove_taps:
            namespaces.remove_taps(taps)
        self.taps = [t for t in self.taps if t not in taps]

    def shutdown(self) -> None:
        # the taps go with the network namespace when this process exits: no `ip` run
        self._kill(list(self.vms), remove_taps=False)

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


def _watch_owner(control: socket.socket) -> None:
    """Exit the moment the owner's end of the control socket closes (owner died)."""
    poller = select.poll()
    poller.register(control.fileno(), select.POLLRDHUP | select.POLLHUP)
    while True:
        for _, events in poller.poll():
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                # our process group: us and every QEMU, also one spawned a moment ago
                # that has not set its PDEATHSIG yet
                os.killpg(0, signal.SIGKILL)


def _qmp_client() -> type[QEMUMonitorProtocol]:
    # Imported on first use (asyncio and the client: ~30 ms), or ahead of it by a thread
    # while the namespaces come up: the supervisor's start is on every Cluster.up() path.
    from qemu.qmp.legacy import QEMUMonitorProtocol

    return QEMUMonitorProtocol


def _proxy_thread(listen: queue.Queue, apt_cache: str, upstreams: dict[str, str]) -> None:
    """Serve the apt proxy. Started before the network unshare, so this thread and the
    workers it starts stay in the host's network and can reach the mirror, while the
    listening socket it is handed lives in the cluster's network."""
    sock = listen.get()
    # The first apt request comes after the cluster is up: the proxy's imports wait for
    # it instead of competing with the start for the interpreter.
    select.select([sock], [], [])
    from antrieb.vm.aptproxy import AptProxy

    AptProxy(Path(apt_cache), upstreams).serve(sock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="antrieb-supervisor")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--runtime", required=True, help="mountpoint for the private tmpfs")
    parser.add_argument("--apt-cache", default="")
    parser.add_argument("--upstreams", default="{}", help="JSON archive -> mirror URL")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides; Ctrl-C reaches it
    try:
        namespaces.enter_private_mounts(args.runtime)
        threading.Thread(target=_watch_owner, args=(control,), daemon=True).start()
        threading.Thread(target=_qmp_client, daemon=True).start()
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
        sup = Supervisor(control, Path(args.runtime))
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


if __name__ == "__main__":
    sys.exit(main())
