"""The qemu driver's golden snapshots: one booted, frozen microvm per (image, memory,
vCPUs, accelerator).

A golden VM boots cold once with its RAM in a shared file, settles (systemd done,
sshd and the agent warmed up), and is migrated to a small state file with
``x-ignore-shared`` so its RAM stays in the file. Every clone maps that file privately
(copy-on-write) and restores the state: no boot, only the pages it touches are its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from antrieb import config, events, hosttools
from antrieb.errors import VMError
from antrieb.vm import cachedir
from antrieb.vm.accel import Accel, host_tsc_khz
from antrieb.vm.golden import GoldenBase, golden_identity, launch_cold, qemu_version
from antrieb.vm.net import plan as netplan
from antrieb.vm.qemu.argv import kernel_append, qemu_argv
from antrieb.vm.spec import Identity, VMSpec
from antrieb.vm.supervisor_client import SupervisorClient

GOLDEN_VERSION = "2"
# A cold boot takes 8-20 s under TCG here (seconds under KVM). Boots that hang (timer
# calibration losing to a busy host) are cut early and retried rather than waited out.
BOOT_TIMEOUT = {"tcg": 75.0, "kvm": 30.0}


@dataclass(frozen=True)
class Golden(GoldenBase):
    @property
    def mem(self) -> Path:
        return self.dir / "mem"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def clone_spec(self, name: str, mac: str, tap: str) -> VMSpec:
        return VMSpec(name=name, kernel=str(self.kernel), initrd=str(self.initrd),
                      append=self.append, accel=self.accel, mem_mb=self.mem_mb,  # type: ignore[arg-type]
                      cpus=self.cpus, base_disk=str(self.disk), base_format="qcow2",
                      mem_path=str(self.mem), mem_share=False, incoming=str(self.state),
                      mac=mac, tap=tap)


def golden_key(image_hash: str, mem_mb: int, cpus: int, accel: str, append: str) -> str:
    # A snapshot restores only into the same machine: the same devices, CPU model,
    # kernel command line and QEMU build. The argv of a stand-in VM captures all of it.
    shape = VMSpec(name="x", kernel="k", initrd="i", append=append, accel=accel,  # type: ignore[arg-type]
                   mem_mb=mem_mb, cpus=cpus, base_disk="d", mem_path="m", incoming="s",
                   mac="m", tap="t")
    argv = qemu_argv(shape, monitor_fd=0, agent_fd=0, console_path="c", incoming_fd=0)
    text = f"{GOLDEN_VERSION}|{image_hash}|{' '.join(argv)}|{qemu_version()}"
    return hashlib.sha256(text.encode()).hexdigest()


def cold_spec(name: str, image, *, accel: str, mem_mb: int, cpus: int, append: str,
              mac: str, tap: str, disk: str | None = None, mem_path: str | None = None,
              ) -> VMSpec:
    """A VM that boots from the image's own disk (never written: an overlay on top)."""
    return VMSpec(name=name, kernel=str(image.kernel), initrd=str(image.initrd), append=append,
                  accel=accel, mem_mb=mem_mb, cpus=cpus, base_disk=str(image.disk),  # type: ignore[arg-type]
                  base_format="raw", disk=disk, mem_path=mem_path, mem_share=mem_path is not None,
                  mac=mac, tap=tap)


def boot_cold(sup: SupervisorClient, spec: VMSpec, identity: Identity, accel: str) -> dict:
    """Cold-boot one microvm to sshd answering; a hung boot is tried twice more."""
    def launch(timeout: float) -> dict:
        return sup.request("launch", wait=timeout + 60, vms=[spec.model_dump()],
                           identities=[identity.model_dump()], boot_timeout=timeout)

    return launch_cold(sup, spec.name, launch, timeout=BOOT_TIMEOUT.get(accel, 120.0),
                       retries=2)


def ensure_golden(image, *, accel: Accel, mem_mb: int = 512, cpus: int = 1) -> Golden:
    """The golden snapshot for this image and shape, made once and then reused."""
    tsc = host_tsc_khz() if accel.name == "tcg" else None
    append = kernel_append(accel=accel.name, tsc_khz=tsc)
    key = golden_key(image.content_hash, mem_mb, cpus, accel.name, append)
    root = config.cache_dir() / "golden"
    root.mkdir(exist_ok=True)
    final = root / f"{image.name}-{key[:12]}"
    t0 = time.monotonic()
    with open(root / f"{image.name}-{key[:12]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = final / "manifest.json"
        made = not manifest.exists()
        if made:
            _make_golden(image, final, key=key, accel=accel.name, mem_mb=mem_mb, cpus=cpus,
                         append=append)
        data = json.loads(manifest.read_text())
        cachedir.mark_used(final)
    golden = Golden(image=image.name, key=key, dir=final, kernel=Path(image.kernel),
                    initrd=Path(image.initrd), append=append, accel=accel.name, mem_mb=mem_mb,
                    cpus=cpus, host_key=data["host_key"], cold_boot_s=data["cold_boot_s"])
    cached = time.monotonic() - t0 < 1.0
    events.emit(events.GoldenSnapshotReady(image=image.name, key=key[:12],
                                           seconds=time.monotonic() - t0, cached=cached))
    if made:
        cachedir.auto_prune()
    return golden


def _make_golden(image, final: Path, *, key: str, accel: str, mem_mb: int, cpus: int,
                 append: str) -> None:
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        subprocess.run([hosttools.require("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", str(image.disk), str(tmp / "disk.qcow2")],
                       check=True, capture_output=True)
        with open(tmp / "mem", "wb") as f:
            f.truncate(mem_mb * 1024 * 1024)
        # Made in place: the clones' overlays name the golden disk by its final path.
        spec = cold_spec("golden", image, accel=accel, mem_mb=mem_mb, cpus=cpus, append=append,
                         mac=netplan.GOLDEN_MAC, tap="tapgold",
                         disk=str(final / "disk.qcow2"), mem_path=str(final / "mem"))
        tmp.rename(final)
        sup = SupervisorClient()
        try:
            timings = boot_cold(sup, spec, golden_identity(), accel)
            reply = sup.request("agent", wait=400, name="golden", agent_op="wait_boot",
                                timeout=330)
            if not reply.get("ok"):
                raise VMError("golden", f"boot did not settle: {reply.get('error')}")
            snap = sup.request("snapshot", wait=120, name="golden",
                               state_path=str(final / "state"))
            if not snap.get("ok"):
                err = (snap.get("errors") or [{"message": snap.get("error")}])[0]
                raise VMError("golden", f"snapshot failed: {err['message']}",
                              console_tail=err.get("console", ""))
        finally:
            sup.shutdown()
        manifest = {"image": image.name, "image_hash": image.content_hash, "key": key,
                    "accel": accel, "mem_mb": mem_mb, "cpus": cpus,
                    "host_key": snap["host_key"], "cold_boot_s": timings["ssh"],
                    "created": time.time()}
        (final / "manifest.json.tmp").write_text(json.dumps(manifest, indent=1))
        (final / "manifest.json.tmp").replace(final / "manifest.json")
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def saved_golden(name: str, *, accel: str, mem_mb: int, cpus: int) -> Golden:
    """The golden of a saved image (:mod:`antrieb.vm.saved`): the same shape as one made
    from a recipe, so clones restore from it the same way; it fits only the machine it
    was saved from."""
    from antrieb.errors import ConfigError
    from antrieb.vm import saved

    m = saved.load(name)
    cachedir.mark_used(m["dir"])
    shape, ours = (m["accel"], m["mem_mb"], m["cpus"]), (accel or m["accel"], mem_mb, cpus)
    if shape != ours:
        raise ConfigError(f"saved image {name!r} was made for {shape[1]} MiB, {shape[2]} "
                          f"vCPU, {shape[0]}; this cluster is {ours[1]} MiB, {ours[2]} vCPU, "
                          f"{ours[0]}")
    if m.get("qemu") != qemu_version():
        raise ConfigError(f"saved image {name!r} was made by {m.get('qemu')}; this host "
                          f"has {qemu_version()} (a snapshot restores only into its build)")
    if not Path(m["base_disk"]).exists():
        raise ConfigError(f"saved image {name!r} needs {m['base_disk']} (the golden it "
                          f"was started from), which is gone; save it again")
    return Golden(image=name, key=m["key"], dir=Path(m["dir"]), kernel=Path(m["kernel"]),
                  initrd=Path(m["initrd"]), append=m["append"], accel=m["accel"],
                  mem_mb=m["mem_mb"], cpus=m["cpus"], host_key=m["host_key"],
                  cold_boot_s=0.0)
