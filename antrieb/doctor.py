"""What this host can do for antrieb, and what to install for what it can't."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from antrieb import config, hosttools


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def _userns_allowed() -> bool:
    try:
        return Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() != "0"
    except OSError:
        return True  # the knob is Debian's; without it user namespaces are allowed


def _accel() -> dict[str, str]:
    """The accelerator verdict: from the probe when an image is built, else a guess."""
    from antrieb.vm import accel

    forced = config.setting("accel")
    if forced:
        return {"name": forced, "reason": "forced by ANTRIEB_ACCEL"}
    try:
        from antrieb.vm import images

        built = [i for i in images.list_images() if i.get("built")]
        if built:
            art = images.ensure(built[0]["name"])
            verdict = accel.detect(art.kernel, art.initrd)
            return {"name": verdict.name, "reason": verdict.reason}
    except Exception as exc:  # doctor reports, it never fails on a broken cache
        return {"name": "unknown", "reason": f"probe not possible: {exc}"}
    if not os.path.exists("/dev/kvm"):
        return {"name": "tcg", "reason": "no /dev/kvm"}
    return {"name": "unknown", "reason": "/dev/kvm exists; build an image to run the probe"}


def report() -> dict[str, Any]:
    # What antrieb runs needs; the test suite's and ./dev's own tools are reported apart.
    gone = hosttools.missing("engine", "libvirt")
    missing = {t.name: " ".join(t.packages) for t in gone}
    for_tests = {t.name: " ".join(t.packages) for t in hosttools.missing("setup", "tests")}
    optional = {t.name: " ".join(t.packages) for t in hosttools.missing(optional=True)
                if t.optional}
    cache = config.cache_dir()
    usage = shutil.disk_usage(cache)
    root = os.geteuid() == 0
    hints = []
    if missing:
        hints.append("apt-get install " + " ".join(sorted({p for t in gone for p in t.packages})))
    if for_tests:
        hints.append("for ./dev test: ./dev setup (installs "
                     + " ".join(sorted(set(for_tests.values()))) + ")")
    if not root and not _userns_allowed():
        hints.append("enable user namespaces: sysctl kernel.unprivileged_userns_clone=1")
    if not root:
        hints.append("image builds need root (mmdebstrap root mode)")
    return {
        "accel": _accel(),
        "qemu": _version([hosttools.find("qemu-system-x86_64") or "qemu-system-x86_64",
                          "--version"]),
        "mmdebstrap": _version([hosttools.find("mmdebstrap") or "mmdebstrap", "--version"]),
        "privileges": {"root": root, "user_namespaces": _userns_allowed()},
        "cache_dir": str(cache),
        "free_disk_gb": round(usage.free / 2**30, 1),
        "missing": missing,
        "missing_for_tests": for_tests,
        "missing_optional": optional,
        "hints": hints,
        "ok": not missing and (root or _userns_allowed()),
    }
