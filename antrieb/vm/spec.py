"""What the host side tells a supervisor about one VM: plain data, JSON on the wire.

Dataclasses, not pydantic models: the supervisor imports this on every cluster start and
its start-up is on the critical path of ``Cluster.up()`` (pydantic costs ~0.12 s there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


class _Wire:
    def model_dump(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class VMSpec(_Wire):
    """Everything needed to start one VM, cold or restored from a golden snapshot."""

    name: str
    kernel: str
    initrd: str
    append: str
    accel: Literal["kvm", "tcg"]
    mem_mb: int = 512
    cpus: int = 1
    # The disk: an overlay on ``base_disk``. ``disk`` names a persistent overlay (the
    # golden's); None means a throw-away overlay in the supervisor's private tmpfs.
    base_disk: str
    base_format: Literal["raw", "qcow2"] = "qcow2"
    disk: str | None = None
    # Guest RAM: a file shared with the golden (share=True while making a golden;
    # share=False maps it privately copy-on-write in a clone), or None for anonymous RAM.
    mem_path: str | None = None
    mem_share: bool = False
    incoming: str | None = None  # golden state file to restore from
    mac: str
    tap: str


@dataclass(frozen=True, kw_only=True)
class Identity(_Wire):
    """Who a VM becomes when it starts: sent to the guest agent."""

    hostname: str
    ip: str
    prefix: int
    gateway: str
    mac: str
    dev: str = "eth0"
    hosts: str
    ssh_public: str | None = None
    ssh_private: str | None = None
    persist: bool = True  # kept on the VM's disk for reboots; not for the golden VM
    # A node of its own, as a freshly installed server is (not for the golden VM): its
    # machine-id and SSH host key (OpenSSH private and public), the cluster's known_hosts,
    # and, when the clone starts, apt's package lists emptied as a fresh install has them.
    machine_id: str | None = None
    host_key_private: str | None = None
    host_key_public: str | None = None
    known_hosts: str | None = None
    fresh_apt: bool = False

    def agent_request(self, now: float, entropy_b64: str) -> dict:
        req = {
            "op": "identity",
            "time": now,
            "entropy": entropy_b64,
            "hostname": self.hostname,
            "hosts": self.hosts,
            "persist": self.persist,
            "net": {"dev": self.dev, "mac": self.mac, "ip": self.ip, "prefix": self.prefix,
                    "gateway": self.gateway},
        }
        if self.ssh_public and self.ssh_private:
            req["ssh"] = {"public": self.ssh_public, "private": self.ssh_private}
        if self.machine_id:
            req["machine_id"] = self.machine_id
        if self.host_key_private and self.host_key_public:
            req["host_key"] = {"private": self.host_key_private, "public": self.host_key_public}
        if self.known_hosts is not None:
            req["known_hosts"] = self.known_hosts
        if self.fresh_apt:
            req["fresh_apt"] = True
        return req
