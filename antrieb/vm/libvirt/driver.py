"""The libvirt driver: the same clusters as the qemu driver, as libvirt domains.

Any libvirt URI works; the default is libvirt's embedded QEMU driver, so no daemon is
needed (see :func:`antrieb.vm.libvirt.golden.default_uri`). ``ANTRIEB_LIBVIRT_URI``
or ``LibvirtDriver(uri=...)`` choose another, e.g. ``qemu:///system`` or
``qemu+ssh://root@host/system``. Domains are q35 + virtio-pci + direct kernel boot of
the same image artefacts, restored from a golden save image per node, with the same
guest agent, identity, network namespace, bridge, taps and apt proxy as the qemu driver.

Example::

    from antrieb import Cluster
    with Cluster(nodes=2, driver="libvirt") as c:
        print(c.run_all("hostname"))
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterable

from antrieb import config
from antrieb.vm import images as vm_images
from antrieb.vm.driver import NodePlan
from antrieb.vm.libvirt.golden import (
    BOOT_TIMEOUT,
    LibvirtGolden,
    boot_cold,
    caps_cache,
    default_uri,
    ensure_golden,
    launch,
    open_supervisor,
    require_libvirt,
)
from antrieb.vm.net import plan as netplan
from antrieb.vm.procfs import pids_in_namespace, stat_fields
from antrieb.vm.qemu.driver import RESTORE_TIMEOUT, apt_upstreams
from antrieb.vm.spec import Identity
from antrieb.vm.supervised import SupervisedDriver
from antrieb.vm.supervisor_client import SupervisorClient


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot): tells a reused pid apart."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


class DomainProcesses:
    """The QEMUs a local libvirt started for one cluster. libvirt daemonizes them: no
    process group of ours holds them and no death signal ties them to the supervisor. The
    supervisor takes them down when it stops or its owner dies; if it dies itself (killed,
    out of memory), they are killed here: by the pids its launches reported, and, for an
    embedded libvirt, every process left in the cluster's network namespace (QEMUs of a
    launch that had not reported yet)."""

    def __init__(self) -> None:
        self._known: dict[int, int] = {}  # pid -> start time
        self._lock = threading.Lock()

    def add(self, pids: Iterable[int]) -> None:
        with self._lock:
            for pid in pids:
                if pid and (start := _start_time(pid)) is not None:
                    self._known[pid] = start

    def kill_survivors(self, netns: str = "") -> list[int]:
        """Kill the reported QEMUs still running, and every process in ``netns``."""
        with self._lock:
            known, self._known = self._known, {}
        pids = [pid for pid, start in known.items() if _start_time(pid) == start]
        if netns:
            pids += [pid for pid in pids_in_namespace("net", netns)
                     if pid not in known and pid != os.getpid()]
        killed = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed

    def watch(self, sup: SupervisorClient) -> None:
        """Kill the survivors the moment the supervisor process ends, however it ends."""
        netns, holder = _cluster_netns(sup.proc.pid)

        def wait() -> None:
            sup.proc.wait()
            try:
                self.kill_survivors(netns)
            finally:
                if holder is not None:
                    os.close(holder)

        threading.Thread(target=wait, daemon=True, name="libvirt-orphans").start()


def _cluster_netns(pid: int) -> tuple[str, int | None]:
    """The supervisor's network namespace (``net:[inode]``) and an fd that keeps it alive:
    a freed namespace's inode number is soon given to a new one (another cluster's), which
    must never be mistaken for this one. Never the owner's own namespace."""
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return "", None
    netns = os.readlink(f"/proc/self/fd/{fd}")
    if netns == os.readlink("/proc/self/ns/net"):
        os.close(fd)
        return "", None
    return netns, fd


class LibvirtDriver(SupervisedDriver):
    name = "libvirt"
    goldens: dict[str, LibvirtGolden]

    def __init__(self, mem_mb: int = 512, cpus: int = 1, uri: str | None = None):
        require_libvirt()
        super().__init__(mem_mb, cpus)
        self.uri = uri or config.setting("libvirt_uri") or default_uri()
        self.embedded = self.uri.startswith("qemu:///embed")
        self.cluster_id = ""  # set by Cluster: goes into each domain's metadata and name
        self.processes = DomainProcesses()

    ensure_golden = staticmethod(ensure_golden)

    def _tap(self, plan: NodePlan) -> str:
        if self.embedded:
            return f"tap{plan.index}"
        # made by a libvirtd in the host's network, so unique on the host (<= 15 chars)
        return f"av{(self.cluster_id or 'x')[-8:]}{plan.index}"

    def start(self, plans: list[NodePlan], identities: list[Identity]) -> dict[str, dict]:
        self.prepare({p.image for p in plans})
        open_supervisor(self.uri, cluster=self.cluster_id,
                        apt_cache=str(config.cache_dir() / "apt-cache"),
                        upstreams=apt_upstreams(), on_spawn=self._adopt)
        assert self.sup is not None
        self.processes.watch(self.sup)
        by_image: dict[str, list[int]] = {}
        for i, plan in enumerate(plans):
            by_image.setdefault(plan.image, []).append(i)
        nodes: dict[str, dict] = {}
        # one launch per golden (a mixed-image cluster restores from several save images)
        for image, indexes in by_image.items():
            golden = self.goldens[image]
            specs = [golden.spec(plans[i].name, plans[i].mac, self._tap(plans[i]),
                                 cluster=self.cluster_id, role=plans[i].role,
                                 tap_managed=not self.embedded) for i in indexes]
            reply = launch(self.sup, specs, [identities[i] for i in indexes],
                           base=str(golden.disk), base_format="qcow2",
                           golden_save=str(golden.save), timeout=RESTORE_TIMEOUT)
            self.processes.add(reply.get("pids", {}).values())
            nodes.update(self._launched(reply))
        if self.embedded:  # the first domain of a machine made libvirt probe QEMU: keep it
            self.sup.request("libvirt_caps", caps_cache=caps_cache())
        return nodes

    def cold_boot(self, image: str) -> float:
        """Boot one fresh domain of the image (no save image) to sshd answering."""
        self.prepare({image})
        golden = self.goldens[image]
        artefacts = vm_images.ensure(image)
        spec = golden.spec("cold", netplan.node_mac(0), "tapcold", cluster="cold", clone=False)
        ident = Identity(hostname="cold", ip=netplan.node_ip(0), prefix=netplan.PREFIX,
                         gateway=netplan.GATEWAY_IP, mac=netplan.node_mac(0),
                         hosts=f"127.0.0.1 localhost\n{netplan.node_ip(0)} cold\n")
        sup = open_supervisor(default_uri())
        try:
            return boot_cold(sup, spec, ident, base=str(artefacts.disk),
                               accel=self.accel)["ssh"]
        finally:
            sup.shutdown()

    def domains(self) -> list[str]:
        """Every domain the cluster's libvirt connection shows (all of them, on a
        shared libvirtd)."""
        if self.sup is None or not self.sup.alive():
            return []
        return self.sup.request("domains", wait=10).get("domains", [])

    def stop(self) -> None:
        if self.sup is None:
            return
        if self.sup._interrupted:  # the channel is out of step: no orderly shutdown
            self.kill()
        else:
            self.sup.shutdown(timeout=30)

    def _hang_up(self, sup: SupervisorClient) -> None:
        hang_up(sup)


def hang_up(sup: SupervisorClient, timeout: float = 10.0) -> None:
    """Stop a libvirt supervisor at once, *through its watchdog*: QEMU processes of an
    embedded libvirt are daemonized, so SIGKILL of the supervisor alone would orphan them.
    Closing the control socket is what the owner's death does too."""
    if sup.alive():
        with contextlib.suppress(OSError):
            sup._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(subprocess.TimeoutExpired):
            sup.proc.wait(timeout)
    sup.kill()


__all__ = ["BOOT_TIMEOUT", "LibvirtDriver"]
