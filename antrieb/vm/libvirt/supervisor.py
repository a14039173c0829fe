"""The per-cluster supervisor of the libvirt driver: the same process model as the qemu
driver's (:mod:`antrieb.vm.supervisor`: private mount + network namespace, bridge, taps,
apt proxy, watchdog on the owner), with domains started through a libvirt connection
opened *inside* it.

Embedded URI (``qemu:///embed?root=...``, the default): libvirt runs in this process and
spawns QEMU from the calling thread, so QEMU inherits the cluster's network namespace
and sees the taps directly; the embedded root lives in the private tmpfs, so its state
is gone with the supervisor. libvirt daemonizes QEMU, so PDEATHSIG cannot tie it to us:
when the owner goes (even by ``kill -9``) the watchdog SIGKILLs every QEMU named by
the embedded driver's pid files before this process exits.

Any other URI (``qemu:///system``, ``qemu+ssh://host/system``): the libvirtd spawns
QEMU in its own namespaces. libvirt creates a uniquely named tap there; this process
moves it into the cluster network and onto the bridge. When the owner dies, the
watchdog destroys the domains through the connection (transient domains: gone).

Run as ``python -m antrieb.vm.libvirt.supervisor`` by :mod:`antrieb.vm.libvirt.driver`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antrieb import hosttools
from antrieb.vm import supervisor
from antrieb.vm.guest.client import AgentClient
from antrieb.vm.guest.sshprobe import wait_ssh_banner
from antrieb.vm.libvirt.embed import (
    domain_pid,
    embedded_root,
    keep_caps,
    kill_all_by_pidfile,
    open_connection,
    prepare_root,
    start_event_loop,
)
from antrieb.vm.libvirt.restore import feed_save_image, unblock_feeder
from antrieb.vm.libvirt.xml import DomainSpec, domain_xml
from antrieb.vm.net import namespaces
from antrieb.vm.procfs import memory_rollup
from antrieb.vm.spec import Identity
from antrieb.vm.supervisor import CONSOLE_TAIL, Supervisor, VMFailure
from antrieb.vm.supervisor_client import wait_gone

PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Domain:
    spec: DomainSpec
    own_disk: bool = True  # an overlay made here (not a golden's persistent disk)
    dom: Any = None
    agent: AgentClient | None = None
    ip: str = ""  # set with its identity
    timings: dict[str, Any] = field(default_factory=dict)

    def console_tail(self, limit: int = CONSOLE_TAIL) -> str:
        return supervisor.console_tail(self.spec.console, limit)


class LibvirtSupervisor(Supervisor):
    def __init__(self, control: socket.socket, runtime: Path, host_netns: int):
        super().__init__(control, runtime)
        self.host_netns = host_netns  # fd of the host's network namespace (for taps)
        self.conn: Any = None
        self._secondary: Any = None
        self.uri = ""
        self.embedded = False
        self.workdir = runtime
        self.domains: dict[str, Domain] = {}
        self._lock = threading.Lock()

    # -- the connection -----------------------------------------------------------

    def op_libvirt_open(self, uri: str, caps_cache: str = "", workdir: str = "") -> dict:
        root = embedded_root(uri)
        if root:
            prepare_root(root, caps_cache)
        elif workdir:
            # A libvirtd outside our mount namespace must see overlays, sockets, consoles.
            self.workdir = Path(workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.conn, self._secondary = open_connection(uri)
        self.uri, self.embedded = uri, root is not None
        return {"ok": True, "seconds": time.monotonic() - t0,
                "libvirt": self.conn.getLibVersion(), "hypervisor": self.conn.getType()}

    def op_libvirt_caps(self, caps_cache: str) -> dict:
        """Keep the embedded driver's capabilities cache for the next supervisor."""
        root = embedded_root(self.uri)
        return {"ok": True, "updated": bool(root) and keep_caps(root, caps_cache)}

    # -- starting domains -----------------------------------------------------------

    def _overlay(self, spec: DomainSpec, base: str, base_format: str) -> None:
        subprocess.run([hosttools.require("qemu-img"), "create", "-q", "-f", "qcow2",
                        "-F", base_format, "-b", base, spec.disk], check=True, capture_output=True)

    def _adopt_tap(self, tap: str) -> None:
        """Move a tap the libvirtd made in its namespace into ours, onto the bridge."""
        subprocess.run([hosttools.require("nsenter"), f"--net=/proc/self/fd/{self.host_netns}",
                        "ip", "link", "set", "dev", tap, "netns", str(os.getpid())],
                       check=True, capture_output=True, pass_fds=(self.host_netns,))
        namespaces.ip_batch([f"link set {tap} master br0", f"link set {tap} up"])

    def _start_domain(self, d: Domain, base: str, base_format: str, golden_save: str | None,
                      identity: Identity, t0: float, boot_timeout: float) -> dict:
        spec = d.spec
        if d.own_disk:
            self._overlay(spec, base, base_format)
        d.timings["overlay"] = time.monotonic() - t0
        xml = domain_xml(spec)
        if golden_save:
            fifo = str(self.workdir / f"{spec.name}.save")
            feeder = feed_save_image(fifo, golden_save, xml)
            try:
                d.dom = self.conn.restoreFlags(fifo, None, 0) or self.conn.lookupByName(
                    spec.domain_name())
            finally:
                unblock_feeder(fifo)
                feeder.join(timeout=5)
                with contextlib.suppress(OSError):
                    os.unlink(fifo)
        else:
            d.dom = self.conn.createXML(xml, 0)
        d.timings["started"] = time.monotonic() - t0
        if spec.tap_managed:
            self._adopt_tap(spec.tap)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(spec.agent_socket)
        d.agent = AgentClient(sock)
        if not golden_save:
            try:
                d.agent.call("ping", timeout=boot_timeout)
            except Exception as exc:
                raise VMFailure(spec.name, f"did not boot in {boot_timeout:.0f}s ({exc})",
                                d.console_tail(), kind="boot_timeout") from exc
        req = identity.agent_request(time.time(), _entropy())
        op = req.pop("op")
        try:
            reply = d.agent.call(op, timeout=boot_timeout, **req)
        except Exception as exc:
            raise VMFailure(spec.name, f"identity not applied: {exc}", d.console_tail()) from exc
        d.ip = identity.ip
        d.timings.update(identity=time.monotonic() - t0, random=reply.get("random"),
                         agent_s=reply.get("seconds"), guest_time=reply.get("time"))
        try:
            answered, probe = wait_ssh_banner(identity.ip, time.monotonic() + boot_timeout)
        except TimeoutError as exc:
            raise VMFailure(spec.name, str(exc), d.console_tail()) from exc
        d.timings["ssh"] = answered - t0
        self._keep_probe(identity.ip, probe, restored=bool(golden_save))
        return d.timings

    def op_launch(self, vms: list[dict], identities: list[dict], base: str,  # type: ignore[override]
                  base_format: str = "qcow2", golden_save: str | None = None,
                  boot_timeout: float = 60) -> dict:
        """Start domains in parallel (restored from golden_save, or cold-booted)."""
        specs, idents = [DomainSpec(**v) for v in vms], [Identity(**i) for i in identities]
        for spec in specs:
            if spec.name in self.domains:
                raise ValueError(f"VM {spec.name!r} exists already")
        specs = [DomainSpec(**{**v, "disk": s.disk or str(self.workdir / f"{s.name}.qcow2"),
                               "agent_socket": str(self.workdir / f"{s.name}.agent"),
                               "console": str(self.workdir / f"{s.name}.console")})
                 for v, s in zip(vms, specs, strict=True)]
        t0 = time.monotonic()
        local_taps = [s.tap for s in specs if not s.tap_managed]
        namespaces.add_taps(local_taps)
        self.taps += local_taps
        started = [Domain(s, own_disk=not v["disk"]) for s, v in zip(specs, vms, strict=True)]
        with self._lock:
            self.domains.update({d.spec.name: d for d in started})
        reply = self._bring_up_all(
            {d.spec.name: (self._start_domain, d, base, base_format, golden_save, ident, t0,
                           boot_timeout)
             for d, ident in zip(started, idents, strict=True)},
            lambda name: self.domains[name].console_tail())
        reply["pids"] = self._pids()  # also after a failure: the owner keeps them
        return reply

    def op_snapshot(self, name: str, state_path: str) -> dict:  # type: ignore[override]
        """Save a running domain to a libvirt save image (the domain is gone after)."""
        d = self.domains[name]
        assert d.agent is not None
        host_key = d.agent.call("exec", cmd="cat /etc/ssh/ssh_host_ed25519_key.pub")["out"]
        d.agent.call("sync", timeout=60)
        t0 = time.monotonic()
        d.dom.save(state_path)
        self._forget([name])
        return {"ok": True, "seconds": time.monotonic() - t0, "host_key": host_key.strip()}

    # -- facts and stopping -----------------------------------------------------------

    def _pids(self, names: list[str] | None = None) -> dict[str, int]:
        pids = {}
        for name, d in list(self.domains.items()):
            if names is None or name in names:
                pid = domain_pid(self.uri, d.spec.domain_name())
                if pid:
                    pids[name] = pid
        return pids

    def _agent(self, name: str) -> AgentClient:
        agent = self.domains[name].agent
        assert agent is not None
        return agent

    def _console(self, name: str) -> str:
        return self.domains[name].console_tail()

    def op_agent(self, name: str, agent_op: str, timeout: float = 30.0, **args: Any) -> dict:
        agent = self.domains[name].agent
        assert agent is not None
        return {"ok": True, "reply": agent.call(agent_op, timeout=timeout, **args)}

    def op_console(self, name: str, limit: int = CONSOLE_TAIL) -> dict:
        return {"ok": True, "console": self.domains[name].console_tail(limit)}

    def op_stats(self) -> dict:
        pids = self._pids()
        stats = {}
        for name, d in self.domains.items():
            pid = pids.get(name)
            rollup = memory_rollup(pid)
            alive = False
            with contextlib.suppress(Exception):
                alive = bool(d.dom.isActive())
            stats[name] = {"pid": pid, "alive": alive, "memory": rollup,
                           "mem_mb": d.spec.mem_mb, "domain": d.spec.domain_name(),
                           "uuid": d.spec.uuid, "xml": d.dom.XMLDesc(0) if alive else ""}
        return {"ok": True, "vms": stats}

    def op_domains(self) -> dict:
        """The names of all domains the connection shows (to prove they are gone)."""
        return {"ok": True, "domains": [d.name() for d in self.conn.listAllDomains()]}

    def _forget(self, names: list[str]) -> None:
        with self._lock:
            gone = [self.domains.pop(n) for n in names if n in self.domains]
        self.probes.drop([d.ip for d in gone if d.ip])
        for d in gone:
            if d.agent is not None:
                d.agent.close()
            paths = [d.spec.agent_socket, d.spec.console] + ([d.spec.disk] if d.own_disk else [])
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _kill(self, names: list[str]) -> None:
        import libvirt

        # SIGKILL first where the pid files are readable (embedded, or a libvirtd on this
        # machine): destroy alone SIGTERMs and waits up to 10 s for QEMU to exit. Then
        # wait until they are gone: destroy finds a QEMU that is still there (dying, or a
        # zombie nobody reaped yet) and sleeps 200 ms per look. An embedded libvirt's
        # QEMUs are our children (we are their subreaper, see main): reaped at once.
        pids = list(self._pids(names).values())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # a libvirtd's QEMU
                wait_gone(pid, 5.0)

        def destroy(d: Domain) -> None:
            with contextlib.suppress(libvirt.libvirtError):
                d.dom.destroy()  # transient: destroyed means undefined and gone

        doomed = [d for n in names if (d := self.domains.get(n)) is not None and d.dom]
        if doomed:
            with ThreadPoolExecutor(len(doomed)) as pool:
                list(pool.map(destroy, doomed))
        taps = [self.domains[n].spec.tap for n in names
                if n in self.domains and not self.domains[n].spec.tap_managed]
        self._forget(names)
        namespaces.remove_taps(taps)
        self.taps = [t for t in self.taps if t not in taps]

    def shutdown(self) -> None:
        self._kill(list(self.domains))
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        if self.workdir != self.runtime:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def emergency_stop(self) -> None:
        """The owner is gone: take every domain down now, then exit."""
        root = embedded_root(self.uri)
        if root:
            kill_all_by_pidfile(root)
        else:
            for pid in self._pids().values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for d in list(self.domains.values()):
                with contextlib.suppress(Exception):
                    d.dom.destroy()
            if self.workdir != self.runtime:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _entropy() -> str:
    import base64

    return base64.b64encode(os.urandom(64)).decode()


def _owner_gone(box: list) -> None:
    if box:
        with contextlib.suppress(Exception):
            box[0].emergency_stop()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    # libvirt daemonizes QEMU: it would be reparented to init, whose reaping of the
    # zombie a teardown waits for (1.6 s for 4 domains here). As their subreaper, we reap.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)  # inheritable on purpose

    def make(control: socket.socket, runtime: Path) -> LibvirtSupervisor:
        # libvirt logs expected noise (no cgroups, no dmidecode, tainted: high-privileges)
        # as errors: into the private tmpfs with it, the console tails say what failed.
        os.environ.setdefault("LIBVIRT_LOG_OUTPUTS", f"4:file:{runtime}/libvirt.log")
        # Started after the network unshare: QEMU spawned from these threads and from
        # the launch workers sits in the cluster network.
        start_event_loop()
        return LibvirtSupervisor(control, runtime, host_netns)

    return supervisor.run(argv, prog="antrieb-libvirt-supervisor", owner_gone=_owner_gone,
                          make=make)


if __name__ == "__main__":
    sys.exit(main())
