"""The VM driver Protocol and the lazy registry of drivers.

A driver turns node plans into running, identified VMs in an isolated network and
hands out TCP connections into that network. ``qemu`` (microvm + QMP) is the default,
``libvirt`` (q35 domains through any libvirt URI, embedded by default) the other;
drivers are imported only when chosen, so ``import antrieb`` never needs libvirt.
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass
from typing import Any, Protocol

from antrieb import config
from antrieb.errors import ConfigError
from antrieb.vm.spec import Identity

DRIVERS = {"qemu": "antrieb.vm.qemu.driver:QemuDriver",
           "libvirt": "antrieb.vm.libvirt.driver:LibvirtDriver"}


@dataclass(frozen=True)
class NodePlan:
    """Where one node sits in its cluster, decided before anything starts."""

    name: str
    role: str
    image: str
    index: int
    ip: str
    mac: str


class Driver(Protocol):
    name: str
    accel: str
    accel_reason: str

    def prepare(self, images: set[str]) -> None:
        """Build or fetch what the images need (slow once, cached after)."""

    def start(self, plans: list[NodePlan], identities: list[Identity]) -> dict[str, dict]:
        """Start every node; returns per-node timings. Raises VMError on failure."""

    def cold_boot(self, image: str) -> float:
        """Seconds for one fresh VM of the image to boot to sshd answering (benchmarks)."""

    def connect(self, ip: str, port: int, timeout: float = 10.0) -> socket.socket:
        """A TCP socket connected to ip:port inside the cluster's network."""

    def console(self, node: str) -> str:
        """The tail of a node's serial console."""

    def boot_id(self, node: str) -> str:
        """The node's current boot (the guest kernel's random boot id)."""

    def await_boot(self, nodes: dict[str, tuple[str, str]], timeout: float) -> dict:
        """Wait until each node (name -> (ip, boot id before)) runs a new boot with sshd
        answering; per-node timings. Raises VMError (with the console) on failure."""

    def stats(self) -> dict[str, Any]:
        """Per-node process facts (pid, memory)."""

    def save_node(self, node: str, image: str, origin: dict[str, Any]) -> dict:
        """Save a running node's disk and memory as the new image ``image``; returns its
        manifest. Raises UnsupportedError where the driver cannot."""

    def stop(self) -> None:
        """Stop everything; idempotent, safe after a failed start."""

    def kill(self) -> None:
        """Stop at once, without waiting for anything in order (Ctrl-C, errors)."""


def get_driver(name: str | None = None, **kwargs: Any) -> Driver:
    name = name or config.setting("driver", "qemu")
    if name not in DRIVERS:
        raise ConfigError(f"unknown driver {name!r}; known drivers: {', '.join(DRIVERS)}")
    module, _, cls = DRIVERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
