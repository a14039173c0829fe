"""Which accelerator VMs run under: KVM where a probe boot proves it works, TCG otherwise.

``/dev/kvm`` existing is not enough: on PVM hosts it only runs PVM-patched guests and a
stock kernel hangs silently. So the answer comes from booting our own initramfs in
probe mode (it prints a marker and powers off). The verdict is cached per host boot and
kernel, so it costs a few seconds once. ``ANTRIEB_ACCEL=kvm|tcg`` skips the probe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from antrieb import config
from antrieb.errors import ConfigError
from antrieb.vm.qemu.argv import qemu_binary

PROBE_MARKER = b"ANTRIEB-PROBE-OK"
PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(kernel: Path, initrd: Path, timeout: float = PROBE_TIMEOUT) -> Accel:
    """Boot the initramfs under KVM in probe mode; KVM only if the marker comes back."""
    if not os.path.exists("/dev/kvm"):
        return Accel("tcg", "no /dev/kvm on this host")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "/dev/kvm is not accessible (add the user to group kvm)")
    argv = [qemu_binary(), "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
            "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config",
            "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1 antrieb.probe", "-serial", "stdio"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Accel("tcg", f"a KVM probe boot printed nothing in {timeout:.0f}s "
                            "(e.g. a PVM-only /dev/kvm): using TCG")
    if PROBE_MARKER in out:
        return Accel("kvm", f"KVM probe boot succeeded in {time.monotonic() - t0:.1f}s")
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return Accel("tcg", f"KVM probe boot failed ({tail[0][:200]}): using TCG")


def detect(kernel: Path, initrd: Path) -> Accel:
    """The accelerator to use, with the reason; forced by ANTRIEB_ACCEL."""
    forced = config.setting("accel")
    if forced:
        if forced not in ("kvm", "tcg"):
            raise ConfigError(f"ANTRIEB_ACCEL must be kvm or tcg, not {forced!r}")
        return Accel(forced, "forced by ANTRIEB_ACCEL")
    key = hashlib.sha256(f"{_boot_id()}:{kernel.stat().st_size}:{kernel}".encode()).hexdigest()
    cache = config.cache_dir() / "accel.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return Accel(cached["name"], cached["reason"] + " (cached for this boot)")
    except (OSError, ValueError, KeyError):
        pass
    verdict = probe_kvm(kernel, initrd)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, **asdict(verdict)}))
    tmp.replace(cache)
    return verdict


@functools.cache
def host_tsc_khz() -> int | None:
    """The host TSC frequency, which a TCG guest reads as its own; None if unknown.

    From ``ANTRIEB_TSC_KHZ``, else the value found earlier in this host boot, else the
    kernel log (``tsc: Detected N MHz processor``), else ``/proc/cpuinfo`` where the
    kernel knows the TSC frequency exactly (``tsc_known_freq``). Kept per boot because it
    is part of the golden snapshot's key: the kernel log is a ring buffer, and once the
    line has scrolled out a later process must not come to another answer (and so to
    another golden, booted without the hint).
    """
    forced = config.setting("tsc_khz")
    if forced:
        return int(forced)
    cache = config.cache_dir() / "tsc.json"
    boot = _boot_id()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("boot_id") == boot and cached.get("khz"):
            return int(cached["khz"])
    except (OSError, ValueError):
        pass
    khz = _tsc_from_kernel_log() or _tsc_from_cpuinfo()
    if khz:
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"boot_id": boot, "khz": khz}))
        tmp.replace(cache)
    return khz


def _tsc_from_kernel_log() -> int | None:
    for argv in (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-q"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r"tsc: (?:Refined TSC clocksource calibration|Detected):? "
                      r"([0-9.]+) MHz", out)
        if m:
            return round(float(m.group(1)) * 1000)
    return None


def _tsc_from_cpuinfo(text: str | None = None) -> int | None:
    """``cpu MHz`` of the first CPU, trusted only with ``tsc_known_freq`` (the kernel was
    told the TSC frequency, e.g. by the hypervisor, instead of measuring it)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    first = text.split("\n\n", 1)[0]
    flags = re.search(r"^flags\s*:(.*)$", first, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", first, re.M)
    if not (flags and mhz and "tsc_known_freq" in flags.group(1).split()):
        return None
    return round(float(mhz.group(1)) * 1000)
