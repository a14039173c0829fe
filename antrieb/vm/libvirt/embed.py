"""The libvirt connection a libvirt supervisor holds, and what keeps it cheap to open.

Embedded (``qemu:///embed?root=DIR``): libvirt's QEMU driver runs in the calling process
with its config and state under DIR (``DIR/etc/qemu.conf``; an event loop must run).
Its capabilities cache (a probe of QEMU costs seconds of CPU under load) is copied in
from antrieb's cache and kept there when it changed. libvirt invalidates that cache
when the newest ctime of the driver modules loaded so far, or the host's CPUID, differ
from what was cached; :func:`open_connection` pins both down.

The copy in the embedded root drops the ``cpu-unavailable-features`` flag: with it,
libvirt 9 reads every one of QEMU's ~400 CPU feature properties by its own ``qom-get``
on each domain start (1600 QMP round trips for 4 nodes, 0.75 of a cluster's 3.9
CPU-seconds measured here); without it, libvirt reads the CPUID words in two. The flag
only chooses how libvirt learns the guest CPU's features, and the domains ask for no
particular feature. A libvirtd's own cache (any other URI) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

QEMU_CONF = """\
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
namespaces = []
cgroup_controllers = []
"""
SYSTEM_PID_DIR = "/run/libvirt/qemu"  # a libvirtd on this machine


def embedded_root(uri: str) -> str | None:
    if uri.startswith("qemu:///embed?root="):
        return uri.split("=", 1)[1]
    return None


def start_event_loop() -> None:
    """libvirt's default event loop on a thread of its own (the embedded driver and
    remote keepalives need one)."""
    import libvirt

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    libvirt.virEventRegisterDefaultImpl()
    threading.Thread(target=run, daemon=True, name="libvirt-events").start()


SLOW_CPU_PROBE_FLAG = b"<flag name='cpu-unavailable-features'/>"


def fit_caps(xml: bytes) -> bytes:
    """A capabilities cache file without the flag that makes libvirt probe CPU features
    one QMP command at a time (see the module's doc)."""
    return b"".join(line for line in xml.splitlines(keepends=True)
                    if line.strip() != SLOW_CPU_PROBE_FLAG)


def prepare_root(root: str, caps_cache: str) -> None:
    Path(root, "cache", "qemu").mkdir(parents=True, exist_ok=True)
    Path(root, "etc").mkdir(exist_ok=True)
    Path(root, "etc", "qemu.conf").write_text(QEMU_CONF)
    if caps_cache and Path(caps_cache).is_dir():
        dst = Path(root, "cache", "qemu", "capabilities")
        dst.mkdir(exist_ok=True)
        for src in Path(caps_cache).glob("*.xml"):
            (dst / src.name).write_bytes(fit_caps(src.read_bytes()))


def open_connection(uri: str) -> tuple[Any, Any]:
    """The connection to ``uri``; for an embedded root also a secondary (secret driver)
    connection to keep open alongside."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised
    root = embedded_root(uri)
    if not root:
        return libvirt.open(uri), None
    cpus = os.sched_getaffinity(0)
    try:
        # libvirt keeps the host's CPUID with its cached capabilities, and CPUID leaf 0x1f
        # names the CPU that runs the check: read it on one fixed CPU.
        os.sched_setaffinity(0, {min(cpus)})
        conn = libvirt.open(uri)
        # A domain start loads the secondary drivers (secret...), which moves the modules'
        # newest ctime: load one now, then validate (or make) the capabilities, so the
        # cached copy matches here, during domain starts and in every later supervisor.
        secondary = libvirt.open(f"secret:///embed?root={root}")
        conn.getDomainCapabilities(None, "x86_64", "q35", "qemu")
    finally:
        os.sched_setaffinity(0, cpus)
    return conn, secondary


def keep_caps(root: str, caps_cache: str) -> bool:
    """Copy the embedded driver's capabilities cache to ``caps_cache`` if it changed."""
    src = Path(root, "cache", "qemu", "capabilities")
    dst = Path(caps_cache)
    if not src.is_dir():
        return False
    fresh = {f.name: fit_caps(f.read_bytes()) for f in src.glob("*.xml")}
    kept = {f.name: f.read_bytes() for f in dst.glob("*.xml")} if dst.is_dir() else {}
    if not fresh or fresh == kept:
        return False
    tmp = Path(f"{caps_cache}.tmp-{os.getpid()}")
    old = Path(f"{caps_cache}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in fresh.items():
        (tmp / name).write_bytes(data)
    with contextlib.suppress(OSError):
        dst.rename(old)
    with contextlib.suppress(OSError):
        tmp.rename(dst)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return True


def domain_pid(uri: str, domain: str) -> int | None:
    """QEMU's pid from libvirt's pid file, where this process can read it (embedded, or
    a libvirtd on this machine); None for a remote one."""
    root = embedded_root(uri)
    folder = Path(root, "run", "qemu") if root else Path(SYSTEM_PID_DIR)
    with contextlib.suppress(OSError, ValueError):
        return int((folder / f"{domain}.pid").read_text().strip())
    return None


def kill_all_by_pidfile(root: str) -> None:
    """SIGKILL every QEMU an embedded driver started (libvirt daemonizes them, so they
    are not our children; their pid files say who they are)."""
    for pidfile in Path(root, "run", "qemu").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
