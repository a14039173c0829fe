"""Golden domains of the libvirt driver: booted once, saved with ``virDomainSave``.

A golden domain boots cold in an embedded libvirt (inside a libvirt supervisor, so on
the same bridge and tap layout as every cluster), settles, and is saved; its disk
overlay becomes the read-only base of every clone's overlay, and its RAM file (a shared
mapping while it ran) every clone's RAM, mapped copy-on-write. Clones are restored from
the save image without that RAM (see :mod:`antrieb.vm.libvirt.migration_stream`), with their
own XML (see :mod:`antrieb.vm.libvirt.xml`).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from antrieb import config, events, hosttools
from antrieb.errors import MissingToolError, SupervisorError, VMError
from antrieb.vm import cachedir
from antrieb.vm.accel import Accel, host_tsc_khz
from antrieb.vm.golden import GoldenBase, golden_identity, launch_cold, qemu_version
from antrieb.vm.libvirt.migration_stream import StreamFormatError, strip_ram_block
from antrieb.vm.libvirt.xml import (
    RAM_BLOCK,
    DomainSpec,
    domain_xml,
    kernel_append,
    read_save_header,
)
from antrieb.vm.net import plan as netplan
from antrieb.vm.qemu.argv import kernel_append as qemu_kernel_append
from antrieb.vm.spec import Identity
from antrieb.vm.supervisor_client import SupervisorClient, runtime_mountpoint

LIBVIRT_GOLDEN_VERSION = "5"  # 5: RAM in a file, clones map it copy-on-write
# q35 cold boots under TCG on a busy 2-core host took 30-75 s here: cut a hung boot late.
BOOT_TIMEOUT = {"tcg": 150.0, "kvm": 45.0}
INSTALL_HINT = ("pip install 'antrieb[libvirt]' (builds libvirt-python: needs apt packages "
                "libvirt-dev pkg-config gcc python3-dev; the driver needs libvirt-daemon "
                "libvirt-daemon-driver-qemu)")


def require_libvirt() -> None:
    """libvirt-python is imported only by this driver; missing, it is an install hint."""
    try:
        import libvirt  # noqa: F401
    except ImportError as exc:
        raise MissingToolError("libvirt-python", INSTALL_HINT) from exc


def default_uri() -> str:
    """libvirt's embedded QEMU driver, rooted in the supervisor's private tmpfs under
    antrieb's state directory: no daemon, and nothing left when the supervisor ends."""
    return f"qemu:///embed?root={runtime_mountpoint()}/libvirt"


def caps_cache() -> str:
    path = config.cache_dir() / "libvirt"
    path.mkdir(exist_ok=True)
    return str(path / "capabilities")


@functools.cache
def libvirt_version() -> int:
    import libvirt

    return libvirt.getVersion()


def open_supervisor(uri: str, *, cluster: str = "", apt_cache: str = "",
                    upstreams: dict[str, str] | None = None,
                    on_spawn: Callable[[SupervisorClient], None] | None = None
                    ) -> SupervisorClient:
    """A libvirt supervisor with its connection to ``uri`` open."""
    sup = SupervisorClient(apt_cache=apt_cache, upstreams=upstreams, on_spawn=on_spawn,
                           module="antrieb.vm.libvirt.supervisor")
    workdir = ""
    if not uri.startswith("qemu:///embed"):
        workdir = str(config.cache_dir() / "libvirt" / "run" / f"{cluster or 'x'}-{sup.pid}")
    reply = sup.request("libvirt_open", wait=120, uri=uri, caps_cache=caps_cache(),
                        workdir=workdir)
    if not reply.get("ok"):
        sup.kill()
        raise SupervisorError(f"cannot open libvirt connection {uri}: {reply.get('error')}")
    return sup


@dataclass(frozen=True)
class LibvirtGolden(GoldenBase):
    @property
    def ram(self) -> Path:
        """The golden's guest RAM as it was saved; clones map it copy-on-write."""
        return self.dir / "ram"

    @property
    def save(self) -> Path:
        """What clones are restored from: the save image without the pages of that RAM
        (``clone.save``), or the whole one if that could not be made."""
        stripped = self.dir / "clone.save"
        return stripped if stripped.exists() else self.dir / "state.save"

    def spec(self, name: str, mac: str, tap: str, *, cluster: str = "", role: str = "",
             tap_managed: bool = False, clone: bool = True) -> DomainSpec:
        """A domain of this golden's shape; the supervisor fills in disk and sockets. A
        clone's RAM is the golden's RAM file, mapped private; anything else (a cold boot)
        gets fresh RAM."""
        return DomainSpec(name=name, uuid=str(uuid.uuid4()), kernel=str(self.kernel),
                          initrd=str(self.initrd), append=self.append, accel=self.accel,
                          mem_mb=self.mem_mb, cpus=self.cpus, disk="", mac=mac, tap=tap,
                          tap_managed=tap_managed, agent_socket="", console="",
                          cluster=cluster, role=role, ram_file=str(self.ram) if clone else "")


def golden_key(image_hash: str, mem_mb: int, cpus: int, accel: str, append: str) -> str:
    shape = DomainSpec(name="x", uuid="u", kernel="k", initrd="i", append=append, accel=accel,
                       mem_mb=mem_mb, cpus=cpus, disk="d", mac="m", tap="t",
                       agent_socket="a", console="c", ram_file="r")
    text = (f"{LIBVIRT_GOLDEN_VERSION}|{image_hash}|{domain_xml(shape)}|{qemu_version()}|"
            f"libvirt {libvirt_version()}")
    return hashlib.sha256(text.encode()).hexdigest()


def launch(sup: SupervisorClient, specs: list[DomainSpec], identities: list[Identity], *,
           base: str, base_format: str, golden_save: str | None, timeout: float) -> dict:
    reply = sup.request("launch", wait=timeout + 60, vms=[s.__dict__ for s in specs],
                        identities=[i.model_dump() for i in identities], base=base,
                        base_format=base_format, golden_save=golden_save,
                        boot_timeout=timeout)
    return reply


def boot_cold(sup: SupervisorClient, spec: DomainSpec, identity: Identity, *, base: str,
              accel: str, retries: int = 1) -> dict:
    """Cold-boot one domain to sshd answering; a hung boot is retried."""
    def boot(timeout: float) -> dict:
        return launch(sup, [spec], [identity], base=base, base_format="raw",
                      golden_save=None, timeout=timeout)

    return launch_cold(sup, spec.name, boot, timeout=BOOT_TIMEOUT.get(accel, 120.0),
                       retries=retries)


def ensure_golden(image, *, accel: Accel, mem_mb: int = 512, cpus: int = 1) -> LibvirtGolden:
    """The saved golden domain for this image and shape, made once and then reused."""
    tsc = host_tsc_khz() if accel.name == "tcg" else None
    append = kernel_append(qemu_kernel_append(accel=accel.name, tsc_khz=tsc))
    key = golden_key(image.content_hash, mem_mb, cpus, accel.name, append)
    root = config.cache_dir() / "golden"
    root.mkdir(exist_ok=True)
    final = root / f"{image.name}-libvirt-{key[:12]}"
    t0 = time.monotonic()
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = not (final / "manifest.json").exists()
        if made:
            _make_golden(image, final, key=key, accel=accel.name, mem_mb=mem_mb, cpus=cpus,
                         append=append)
        data = json.loads((final / "manifest.json").read_text())
        cachedir.mark_used(final)
    golden = LibvirtGolden(image=image.name, key=key, dir=final, kernel=Path(image.kernel),
                           initrd=Path(image.initrd), append=append, accel=accel.name,
                           mem_mb=mem_mb, cpus=cpus, host_key=data["host_key"],
                           cold_boot_s=data["cold_boot_s"])
    events.emit(events.GoldenSnapshotReady(image=image.name, key=key[:12],
                                           seconds=time.monotonic() - t0,
                                           cached=time.monotonic() - t0 < 1.0))
    if made:
        cachedir.auto_prune()
    return golden


def _make_golden(image, final: Path, *, key: str, accel: str, mem_mb: int, cpus: int,
                 append: str) -> None:
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    try:
        disk = final / "disk.qcow2"
        subprocess.run([hosttools.require("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", str(image.disk), str(disk)], check=True, capture_output=True)
        golden = LibvirtGolden(image=image.name, key=key, dir=final, kernel=Path(image.kernel),
                               initrd=Path(image.initrd), append=append, accel=accel,
                               mem_mb=mem_mb, cpus=cpus, host_key="", cold_boot_s=0.0)
        spec = golden.spec("golden", netplan.GOLDEN_MAC, "tapgold")
        spec = DomainSpec(**{**spec.__dict__, "disk": str(disk), "ram_shared": True})
        sup = open_supervisor(default_uri())
        try:
            timings = boot_cold(sup, spec, golden_identity(), base=str(image.disk),
                                  accel=accel)
            reply = sup.request("agent", wait=400, name="golden", agent_op="wait_boot",
                                timeout=330)
            if not reply.get("ok"):
                raise VMError("golden", f"boot did not settle: {reply.get('error')}")
            snap = sup.request("snapshot", wait=300, name="golden",
                               state_path=str(final / "state.save"))
            if not snap.get("ok"):
                err = (snap.get("errors") or [{"message": snap.get("error")}])[0]
                raise VMError("golden", f"save failed: {err['message']}",
                              console_tail=err.get("console", ""))
            sup.request("libvirt_caps", caps_cache=caps_cache())
        finally:
            sup.shutdown()
        stripped = _strip_save(final / "state.save", final / "clone.save")
        manifest = {"image": image.name, "image_hash": image.content_hash, "key": key,
                    "accel": accel, "mem_mb": mem_mb, "cpus": cpus, "driver": "libvirt",
                    "host_key": snap["host_key"], "cold_boot_s": timings["ssh"],
                    "save_bytes": os.path.getsize(golden.save), "clone_stream": stripped,
                    "created": time.time()}
        (final / "manifest.json.tmp").write_text(json.dumps(manifest, indent=1))
        (final / "manifest.json.tmp").replace(final / "manifest.json")
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _strip_save(full: Path, stripped: Path) -> str:
    """The save image without the pages of the golden's RAM file (clones map the file):
    a restore then reads ~0.3 MB instead of all RAM in use. If QEMU's stream is not laid
    out as expected, clones read the whole image: slower, equally correct."""
    tmp = stripped.with_suffix(".tmp")
    try:
        with open(full, "rb") as src, open(tmp, "wb") as dst:
            header = read_save_header(src.read(1 << 20))
            src.seek(0)
            dst.write(src.read(header.stream_offset))
            stats = strip_ram_block(src, dst, RAM_BLOCK)
    except StreamFormatError as exc:
        tmp.unlink(missing_ok=True)
        return f"whole ({exc})"
    tmp.replace(stripped)
    full.unlink()
    return f"{stats.pages_dropped} pages left to the RAM file, {stats.bytes_out} bytes"
