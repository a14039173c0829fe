"""The qemu driver's supervisor: starts each microvm's QEMU itself, restores clones from
the golden state over QMP, and applies identities through the guest agent. The process
model (namespaces, proxy, watchdog, control loop) is :mod:`antrieb.vm.supervisor`'s.
Run as ``python -m antrieb.vm.qemu.supervisor`` by :mod:`antrieb.vm.qemu.driver`.

QEMU children get ``PDEATHSIG=KILL`` (through ``setpriv``, exec'd from this process's
main thread, because the kernel ties the death signal to the *thread* that forked); when
the owner hangs up, the watchdog kills this process group: us and every QEMU.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from antrieb import hosttools
from antrieb.vm import supervisor
from antrieb.vm.guest.client import AgentClient
from antrieb.vm.guest.sshprobe import wait_ssh_banner
from antrieb.vm.net import namespaces
from antrieb.vm.procfs import cpu_seconds, memory_rollup
from antrieb.vm.qemu.argv import qemu_argv, qemu_binary
from antrieb.vm.spec import Identity, VMSpec
from antrieb.vm.supervisor import CONSOLE_TAIL, Supervisor, VMFailure

if TYPE_CHECKING:
    from qemu.qmp.legacy import QEMUMonitorProtocol

@dataclass
class RunningVM:
    spec: VMSpec
    proc: subprocess.Popen
    qmp_sock: socket.socket
    agent: AgentClient
    console: Path
    state_fd: int | None = None  # the fd number QEMU inherited the golden state as
    ip: str = ""  # set with its identity
    # The monitor's client, kept open: QEMU greets a monitor connection once, so a second
    # client on the same socket (a save after the restore) would wait for ever.
    qmp: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def console_tail(self, limit: int = CONSOLE_TAIL) -> str:
        return supervisor.console_tail(self.console, limit)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class QemuSupervisor(Supervisor):
    def __init__(self, control: socket.socket, runtime: Path):
        super().__init__(control, runtime)
        self.vms: dict[str, RunningVM] = {}
        self.qemu = qemu_binary()
        self.setpriv = hosttools.find("setpriv")
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
        if vm.qmp is None:
            qmp = _qmp_client()(vm.qmp_sock)
            qmp.connect()
            qmp.settimeout(30)
            vm.qmp = qmp
        return vm.qmp

    def _restore(self, vm: RunningVM) -> None:
        """Start loading the golden state; the clone runs by itself once loaded (the golden
        was snapshotted running), and the agent answers only then: no polling here."""
        qmp = self._qmp(vm)
        qmp.cmd("migrate-set-capabilities",
                capabilities=[{"capability": "x-ignore-shared", "state": True}])
        qmp.cmd("migrate-incoming", uri=f"fd:{vm.state_fd}")

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

    def op_snapshot(self, name: str, state_path: str) -> dict:
        """Freeze a VM booted with shared RAM and write its device state to state_path."""
        vm = self.vms[name]
        host_key = vm.agent.call("exec", cmd="cat /etc/ssh/ssh_host_ed25519_key.pub")["out"]
        vm.agent.call("sync", timeout=60)
        qmp = self._qmp(vm)
        t0 = time.monotonic()
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
        self._kill([name])
        return {"ok": True, "seconds": time.monotonic() - t0, "host_key": host_key.strip()}

    def op_save(self, name: str, disk: str, mem: str, state: str) -> dict:
        """Save a running clone as a golden: disk overlay, RAM in a shared file, device
        state (see :mod:`antrieb.vm.qemu.save`). The clone is paused meanwhile."""
        from dataclasses import replace

        from antrieb.vm.qemu import save

        vm = self.vms[name]
        host_key = vm.agent.call("exec", cmd="cat /etc/ssh/ssh_host_ed25519_key.pub")["out"]
        vm.agent.call("sync", timeout=60)
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        failed = lambda message: self._failure(vm, f"save: {message}")  # noqa: E731
        with open(mem, "wb") as f:
            f.truncate(vm.spec.mem_mb * 1024 * 1024)
        qmp = self._qmp(vm)
        loader_name = f"save-{name}"
        try:
            qmp.cmd("stop")
            save.copy_disk(qmp, vm.proc.pid, disk, failed)
            timings["disk_s"] = time.monotonic() - t0
            # The loader: the clone's machine with its RAM in the new shared file and the
            # new overlay as its disk. "-incoming defer" wants a state fd: /dev/null here,
            # the state comes over the socket instead.
            spec = replace(vm.spec, name=loader_name, mem_path=mem, mem_share=True,
                           disk=disk, incoming="/dev/null", tap="tapsave")
            namespaces.add_taps([spec.tap])
            self.taps.append(spec.tap)
            loader = self._spawn(spec)
            lqmp = self._qmp(loader)
            try:
                sock = str(self.runtime / "save.sock")
                save.full_migration(qmp, lqmp, sock, failed)
                timings["ram_s"] = time.monotonic() - t0 - timings["disk_s"]
                save.snapshot_running(lqmp, state, failed)
            finally:
                self._kill([loader_name])
        finally:
            with contextlib.suppress(Exception):
                qmp.cmd("cont")  # the node goes on, saved or not
        timings["seconds"] = time.monotonic() - t0
        return {"ok": True, "host_key": host_key.strip(), **timings}

    def _agent(self, name: str) -> AgentClient:
        return self.vms[name].agent

    def _console(self, name: str) -> str:
        return self.vms[name].console_tail()

    def op_agent(self, name: str, agent_op: str, timeout: float = 30.0, **args: Any) -> dict:
        return {"ok": True, "reply": self.vms[name].agent.call(agent_op, timeout=timeout, **args)}

    def op_console(self, name: str, limit: int = CONSOLE_TAIL) -> dict:
        return {"ok": True, "console": self.vms[name].console_tail(limit)}

    def op_stats(self) -> dict:
        stats = {}
        for name, vm in self.vms.items():
            pid = vm.proc.pid
            stats[name] = {"pid": pid, "alive": vm.proc.poll() is None,
                           "memory": memory_rollup(pid), "mem_mb": vm.spec.mem_mb,
                           "cpu_s": cpu_seconds(pid)}
        return {"ok": True, "vms": stats}

    def _kill(self, names: list[str], remove_taps: bool = True) -> None:
        vms = [self.vms.pop(n) for n in names if n in self.vms]
        self.probes.drop([vm.ip for vm in vms if vm.ip])
        for vm in vms:
            vm.kill()
        for vm in vms:
            vm.proc.wait()
            vm.agent.close()
            if vm.qmp is not None:
                with contextlib.suppress(Exception):
                    vm.qmp.close()
            vm.qmp_sock.close()
        taps = [vm.spec.tap for vm in vms]
        if remove_taps:
            namespaces.remove_taps(taps)
        self.taps = [t for t in self.taps if t not in taps]

    def shutdown(self) -> None:
        # the taps go with the network namespace when this process exits: no `ip` run
        self._kill(list(self.vms), remove_taps=False)

def _qmp_client() -> type[QEMUMonitorProtocol]:
    # Imported on first use (asyncio and the client: ~30 ms), or ahead of it by a thread
    # while the namespaces come up: the supervisor's start is on every Cluster.up() path.
    from qemu.qmp.legacy import QEMUMonitorProtocol

    return QEMUMonitorProtocol


def _owner_gone(box: list) -> None:
    # our process group: us and every QEMU, also one spawned a moment ago that has not
    # set its PDEATHSIG yet
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    return supervisor.run(
        argv, prog="antrieb-supervisor", owner_gone=_owner_gone, make=QemuSupervisor,
        before_network=lambda: threading.Thread(target=_qmp_client, daemon=True).start())


if __name__ == "__main__":
    sys.exit(main())
