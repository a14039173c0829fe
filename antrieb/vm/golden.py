"""What every driver's golden snapshot shares: the record of one booted, frozen VM per
(image, memory, vCPUs, accelerator), its fixed identity, and the cold boot that makes it.

Each driver keeps its own kind of snapshot: :mod:`antrieb.vm.qemu.golden` (RAM in a
shared file, device state migrated with ``x-ignore-shared``) and
:mod:`antrieb.vm.libvirt.golden` (a domain saved with ``virDomainSave``).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from antrieb.errors import VMError
from antrieb.vm.net import plan as netplan
from antrieb.vm.qemu.argv import qemu_binary
from antrieb.vm.spec import Identity
from antrieb.vm.supervisor_client import SupervisorClient


@dataclass(frozen=True)
class GoldenBase:
    """What every driver's golden snapshot has: the image it was booted from, the shape,
    the kernel command line, and its folder with the disk."""

    image: str
    key: str
    dir: Path
    kernel: Path
    initrd: Path
    append: str
    accel: str
    mem_mb: int
    cpus: int
    host_key: str
    cold_boot_s: float

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"


# A reboot is a cold boot from the node's own disk: 8-20 s under TCG here, several
# nodes at once on two cores take longer. No retry: a node that hangs is a failure.
REBOOT_TIMEOUT = {"tcg": 180.0, "kvm": 60.0}


def reboot_timeout(accel: str) -> float:
    return REBOOT_TIMEOUT.get(accel, 180.0)


@functools.cache
def qemu_version() -> str:
    """The QEMU build's version line: a snapshot restores only into the same build."""
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def golden_identity() -> Identity:
    return Identity(hostname="golden", ip=netplan.GOLDEN_IP, prefix=netplan.PREFIX,
                    gateway=netplan.GATEWAY_IP, mac=netplan.GOLDEN_MAC,
                    hosts=f"127.0.0.1 localhost\n{netplan.GOLDEN_IP} golden\n", persist=False)


def launch_cold(sup: SupervisorClient, name: str, launch: Callable[[float], dict], *,
                timeout: float, retries: int) -> dict:
    """Cold-boot one VM to sshd answering: ``launch(boot_timeout)`` asks the supervisor
    for it. A boot that hangs (TCG timer calibration can lose under load) is stopped and
    tried again, ``retries`` times; any other failure raises :class:`VMError` at once."""
    for attempt in range(retries + 1):
        reply = launch(timeout)
        if reply.get("ok"):
            return reply["nodes"][name]
        err = (reply.get("errors") or [{"message": reply.get("error", "?"), "console": ""}])[0]
        sup.request("stop", names=[name])
        if err.get("kind") != "boot_timeout" or attempt == retries:
            raise VMError(name, err["message"], console_tail=err.get("console", ""))
    raise AssertionError("unreachable")
