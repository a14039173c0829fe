"""What the qemu and libvirt drivers share: one supervisor process per cluster (see
:mod:`antrieb.vm.supervisor`) that owns the VMs, the network namespace and the consoles.
A driver adds how it prepares images and starts VMs; the rest goes through here."""

from __future__ import annotations

import socket
import threading
from typing import Any

from antrieb.errors import UnsupportedError, VMError
from antrieb.vm import accel as accel_mod
from antrieb.vm import images as vm_images
from antrieb.vm.supervisor_client import SupervisorClient


class SupervisedDriver:
    # ensure_golden(artefacts, *, accel, mem_mb, cpus): the driver's golden snapshot maker
    ensure_golden: Any

    def __init__(self, mem_mb: int = 512, cpus: int = 1) -> None:
        self.mem_mb, self.cpus = mem_mb, cpus
        self.accel = ""
        self.accel_reason = ""
        self.goldens: dict[str, Any] = {}  # image -> the driver's golden snapshot
        self.sup: SupervisorClient | None = None
        self._consoles: dict[str, str] = {}
        self._killed = False  # kill() came first: a later start() must not launch anything
        self._sup_lock = threading.Lock()

    def prepare(self, images: set[str]) -> None:
        """Images built and golden snapshots made (each once); the accelerator probed on
        the first image."""
        for image in sorted(images):
            if image in self.goldens:
                continue
            artefacts = vm_images.ensure(image)
            if not self.accel:
                verdict = accel_mod.detect(artefacts.kernel, artefacts.initrd)
                self.accel, self.accel_reason = verdict.name, verdict.reason
            verdict = accel_mod.Accel(self.accel, self.accel_reason)
            self.goldens[image] = self.ensure_golden(artefacts, accel=verdict,
                                                     mem_mb=self.mem_mb, cpus=self.cpus)

    def _launched(self, reply: dict) -> dict[str, Any]:
        """The nodes of a launch reply. A failed launch keeps each failed node's console
        (for :meth:`console`) and raises :class:`VMError` for the first."""
        if reply.get("ok"):
            return reply["nodes"]
        errors = reply.get("errors") or [{"node": "?", "message": reply.get("error"),
                                          "console": ""}]
        for err in errors:
            self._consoles[err["node"]] = err.get("console", "")
        first = errors[0]
        raise VMError(first["node"], first["message"], console_tail=first.get("console", ""))

    def boot_id(self, node: str) -> str:
        """The node's current boot (the kernel's random boot id), from its agent."""
        reply = self._sup().request("agent", name=node, agent_op="ping", timeout=10)
        if not reply.get("ok"):
            raise VMError(node, f"agent: {reply.get('error')}")
        return reply["reply"].get("boot_id", "")

    def await_boot(self, nodes: dict[str, tuple[str, str]], timeout: float) -> dict:
        """Wait until every node (name -> (ip, boot id before)) runs a new boot with sshd
        answering; per node the seconds until its agent and its sshd answered. See
        :meth:`antrieb.vm.supervisor.Supervisor.op_await_boot`."""
        reply = self._sup().request(
            "await_boot", wait=timeout + 30, timeout=timeout,
            nodes=[{"name": n, "ip": ip, "old_boot_id": b} for n, (ip, b) in nodes.items()])
        return self._launched(reply)

    def _sup(self) -> SupervisorClient:
        if self.sup is None:
            raise VMError("?", "no cluster is running")
        return self.sup

    def _adopt(self, sup: SupervisorClient) -> None:
        """Take the cluster's supervisor as soon as it exists, so kill() reaches it."""
        with self._sup_lock:
            self.sup = sup
            killed = self._killed
        if killed:  # stopped before the supervisor even started
            sup.kill()
            raise VMError("?", "the cluster was stopped while it started")

    def _hang_up(self, sup: SupervisorClient) -> None:
        sup.kill()

    def kill(self) -> None:
        with self._sup_lock:
            self._killed = True
            sup = self.sup
        if sup is not None:
            self._hang_up(sup)

    def save_node(self, node: str, image: str, origin: dict[str, Any]) -> dict:
        """Save a running node as a new image (drivers that can override this)."""
        raise UnsupportedError(getattr(self, "name", "this"), "saving a node (save_node)")

    def host_key(self, image: str) -> str:
        return self.goldens[image].host_key

    def connect(self, ip: str, port: int, timeout: float = 10.0) -> socket.socket:
        if self.sup is None:
            raise VMError("?", "cluster is not running")
        return self.sup.connect(ip, port, timeout)

    def console(self, node: str) -> str:
        if self.sup is not None and self.sup.alive():
            reply = self.sup.request("console", wait=10, name=node)
            if reply.get("ok"):
                return reply["console"]
        return self._consoles.get(node, "")

    def stats(self) -> dict[str, Any]:
        if self.sup is None:
            return {}
        return self.sup.request("stats", wait=10).get("vms", {})

    def supervisor_pid(self) -> int | None:
        return self.sup.pid if self.sup else None
