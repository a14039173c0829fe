"""The qemu driver: microvm clones restored from golden snapshots, one supervisor per
cluster (see :mod:`antrieb.vm.supervisor`)."""

from __future__ import annotations

import sys

from antrieb import config
from antrieb.errors import ConfigError, MissingToolError, VMError
from antrieb.vm import images as vm_images
from antrieb.vm import saved
from antrieb.vm.driver import NodePlan
from antrieb.vm.golden import qemu_version
from antrieb.vm.net import plan as netplan
from antrieb.vm.qemu.golden import Golden, boot_cold, cold_spec, ensure_golden, saved_golden
from antrieb.vm.spec import Identity
from antrieb.vm.supervised import SupervisedDriver
from antrieb.vm.supervisor_client import SupervisorClient

RESTORE_TIMEOUT = 60.0


def apt_upstreams() -> dict[str, str]:
    """The host's Debian archives for the cluster's apt proxy; empty (with a warning) when
    the host has none configured, so clusters still start but apt in them will fail."""
    from antrieb.vm.net import mirror

    try:
        return mirror.debian_upstreams()
    except (ConfigError, MissingToolError) as exc:
        print(f"antrieb: no apt proxy for this cluster: {exc}", file=sys.stderr)
        return {}


class QemuDriver(SupervisedDriver):
    name = "qemu"
    goldens: dict[str, Golden]

    ensure_golden = staticmethod(ensure_golden)

    def prepare(self, images: set[str]) -> None:
        """Recipes as the shared driver does; saved images (:mod:`antrieb.vm.saved`) are
        goldens already, checked against this driver's machine shape."""
        kept = {i for i in images if i not in self.goldens and saved.exists(i)}
        super().prepare(set(images) - kept)
        for name in sorted(kept):
            golden = saved_golden(name, accel=self.accel, mem_mb=self.mem_mb, cpus=self.cpus)
            self.accel = self.accel or golden.accel
            self.accel_reason = self.accel_reason or "the saved image's accelerator"
            self.goldens[name] = golden

    def save_node(self, node: str, image: str, origin: dict) -> dict:
        """Save the running ``node`` (started from ``origin["image"]``) as the saved image
        ``image``: disk and memory, so clones of it resume where it was."""
        if self.sup is None:
            raise VMError(node, "the cluster is not running")
        golden = self.goldens[origin["image"]]
        folder = saved.create(image)
        try:
            reply = self.sup.request("save", wait=600, name=node,
                                     disk=str(folder / "disk.qcow2"),
                                     mem=str(folder / "mem"), state=str(folder / "state"))
            if not reply.get("ok"):
                err = (reply.get("errors") or [{"message": reply.get("error")}])[0]
                raise VMError(node, f"save failed: {err['message']}",
                              console_tail=err.get("console", ""))
            return saved.finish(folder, {
                "origin": origin, "driver": self.name, "memory": True, "key": golden.key,
                "accel": golden.accel, "mem_mb": golden.mem_mb, "cpus": golden.cpus,
                "kernel": str(golden.kernel), "initrd": str(golden.initrd),
                "append": golden.append, "host_key": reply["host_key"],
                "qemu": qemu_version(), "base_disk": str(golden.disk),
                "seconds": reply["seconds"], "disk_s": reply.get("disk_s"),
                "ram_s": reply.get("ram_s")})
        except BaseException:
            saved.remove(image)
            raise

    def start(self, plans: list[NodePlan], identities: list[Identity]) -> dict[str, dict]:
        self.prepare({p.image for p in plans})
        # registered as soon as it exists: a kill() from another thread during the start
        # (a stopped run) reaches it, and the start fails at once
        SupervisorClient(apt_cache=str(config.cache_dir() / "apt-cache"),
                         upstreams=apt_upstreams(), on_spawn=self._adopt)
        assert self.sup is not None
        specs = [self.goldens[p.image].clone_spec(p.name, p.mac, f"tap{p.index}").model_dump()
                 for p in plans]
        reply = self.sup.request("launch", wait=RESTORE_TIMEOUT + 30, vms=specs,
                                 identities=[i.model_dump() for i in identities],
                                 boot_timeout=RESTORE_TIMEOUT)
        return self._launched(reply)

    def cold_boot(self, image: str) -> float:
        """Boot one fresh VM of the image (no snapshot) to sshd answering; its seconds."""
        self.prepare({image})
        golden = self.goldens[image]
        artefacts = vm_images.ensure(image)
        spec = cold_spec("cold", artefacts, accel=self.accel, mem_mb=self.mem_mb,
                         cpus=self.cpus, append=golden.append, mac=netplan.node_mac(0),
                         tap="tapcold")
        ident = Identity(hostname="cold", ip=netplan.node_ip(0), prefix=netplan.PREFIX,
                         gateway=netplan.GATEWAY_IP, mac=netplan.node_mac(0),
                         hosts=f"127.0.0.1 localhost\n{netplan.node_ip(0)} cold\n")
        sup = SupervisorClient()
        try:
            return boot_cold(sup, spec, ident, self.accel)["ssh"]
        finally:
            sup.shutdown()

    def stop(self) -> None:
        if self.sup is not None:
            self.sup.shutdown()
