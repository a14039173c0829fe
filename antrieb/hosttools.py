"""Every program antrieb (and its test suite) runs on the host, and the Debian package
that provides it.

One table, read by three parties: the code that shells out takes its program names
from here (:func:`require`), ``antrieb doctor`` reports what is missing and what to
install, and the tests hold the table against ``./dev``'s package list and against the
code (a program called on the host but not named here fails the unit tier). CI then
proves it on a pristine Debian root (``.ci/pristine-root``): ``./dev``'s list installs
there and provides every tool that is not optional.

Programs run *inside* guests or chroots (the guest agent's ``ip``, ``apt-get`` in an
image's root) are not host tools and are not listed.

Example::

    from antrieb import hosttools

    qemu_img = hosttools.require("qemu-img")   # a path, or MissingToolError with the hint
    [t.name for t in hosttools.missing()]      # what this host lacks

Run ``python -m antrieb.hosttools`` for the table, ``... check`` to exit non-zero
naming each missing tool and its package (stdlib only: it runs before any venv).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Literal

from antrieb.errors import MissingToolError

Scope = Literal["engine", "libvirt", "setup", "tests"]

# Where a root shell finds programs on Debian; a non-root PATH may lack the sbin folders
# (depmod, mkfs.ext4, libvirtd live there).
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HostTool:
    name: str  # the program as the code calls it
    package: str  # the Debian package that provides it
    why: str
    scope: Scope = "engine"
    optional: bool = False  # antrieb works without it (a fallback, or one test skips)
    # In every Debian system (Essential, or Priority required: mmdebstrap's minbase), so
    # ./dev does not list it; the pristine-root check in CI proves the claim.
    base: bool = False
    extra_packages: tuple[str, ...] = ()  # also needed for the tool to do its job
    where: tuple[str, ...] = ()  # globs for programs outside PATH

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.package, *self.extra_packages)

    @property
    def hint(self) -> str:
        return "apt-get install " + " ".join(self.packages)


def _t(name: str, package: str, why: str, **kw: object) -> tuple[str, HostTool]:
    return name, HostTool(name, package, why, **kw)  # type: ignore[arg-type]


TOOLS: dict[str, HostTool] = dict([
    # -- the engine: images, VMs, networks --------------------------------------------
    _t("qemu-system-x86_64", "qemu-system-x86", "runs every VM (microvm), and the accel probe"),
    _t("qemu-img", "qemu-utils", "qcow2 overlays of golden disks for snapshots and clones"),
    _t("mmdebstrap", "mmdebstrap", "builds an image's root filesystem"),
    _t("unshare", "util-linux", "mmdebstrap's mounts in a private namespace; tests: the "
       "guest agent in one"),
    _t("mkfs.ext4", "e2fsprogs", "makes the image disk from the root folder, no loop mount"),
    _t("depmod", "kmod", "indexes the guest kernel's modules during an image build"),
    _t("dpkg-deb", "dpkg", "unpacks the guest kernel package", base=True),
    _t("tar", "tar", "unpacks the guest kernel package", base=True),
    _t("chroot", "coreutils", "the build hook resolves the kernel package inside the root",
       base=True),
    _t("rm", "coreutils", "removes a build folder without crossing file systems", base=True),
    _t("umount", "mount", "detaches what a crashed mmdebstrap left mounted", base=True),
    _t("busybox", "busybox-static", "the initramfs's shell and tools (must be static)",
       where=("/bin/busybox",)),
    _t("gcc", "gcc", "compiles the guest agent's fast path, linked statically",
       extra_packages=("libc6-dev",)),
    _t("zstd", "zstd", "decompresses .ko.zst kernel modules for the initramfs",
       optional=True),
    _t("ip", "iproute2", "the cluster network: bridge, taps, addresses in the namespace"),
    _t("setpriv", "util-linux", "QEMU dies with its supervisor (--pdeathsig KILL)"),
    _t("dmesg", "util-linux", "reads the host TSC frequency for tsc_early_khz"),
    _t("journalctl", "systemd", "reads the TSC frequency where dmesg is not allowed",
       optional=True),
    # -- the libvirt driver -----------------------------------------------------------
    _t("nsenter", "util-linux", "moves a libvirt tap into the cluster's namespace",
       scope="libvirt"),
    _t("libvirtd", "libvirt-daemon", "the qemu:///system URI (and the tests' own daemon)",
       scope="libvirt", optional=True, extra_packages=("libvirt-daemon-driver-qemu",)),
    _t("virtlogd", "libvirt-daemon", "libvirtd's log daemon", scope="libvirt", optional=True),
    _t("adduser", "adduser", "./dev creates the libvirt-qemu user Debian's libvirt wants",
       scope="setup"),
    # -- ./dev setup ------------------------------------------------------------------
    _t("python3", "python3", "the venv antrieb runs in", scope="setup",
       extra_packages=("python3-venv", "python3-dev")),
    _t("pkg-config", "pkg-config", "pip builds libvirt-python against libvirt-dev",
       scope="setup", extra_packages=("libvirt-dev",)),
    # -- the test suite ---------------------------------------------------------------
    _t("initdb", "postgresql", "tests: a private PostgreSQL for the run store and Grafana SQL",
       scope="tests", where=("/usr/lib/postgresql/*/bin/initdb",)),
    _t("pg_isready", "postgresql", "tests: waits for that PostgreSQL", scope="tests",
       where=("/usr/lib/postgresql/*/bin/pg_isready",)),
    _t("chromium", "chromium", "tests: the notebook widget in a real browser", scope="tests"),
    _t("chromedriver", "chromium-driver", "tests: selenium drives chromium", scope="tests"),
    _t("debugfs", "e2fsprogs", "tests: read files out of a built disk", scope="tests"),
    _t("cpio", "cpio", "tests: the real cpio agrees the initramfs is valid", scope="tests"),
    _t("ss", "iproute2", "tests: port checks run on the host", scope="tests"),
    _t("netstat", "net-tools", "tests: the port checks' fallback", scope="tests",
       optional=True),
    _t("bash", "bash", "tests: checks and wrapped commands run locally", scope="tests",
       base=True),
    _t("dash", "dash", "tests: syntax check of the initramfs /init", scope="tests", base=True),
    _t("sh", "dash", "tests: the same, where dash is not found", scope="tests", base=True),
    _t("sleep", "coreutils", "tests: stand-in child processes", scope="tests", base=True),
])


def get(name: str) -> HostTool:
    """The registry entry of ``name``; a KeyError names an unregistered tool early."""
    try:
        return TOOLS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in antrieb.hosttools.TOOLS: add it there "
                       "(and its package to ./dev)") from None


def find(name: str) -> str | None:
    """The path of ``name`` on this host, or None."""
    tool = get(name)
    path = shutil.which(name) or shutil.which(name, path=_SEARCH_PATH)
    if path:
        return path
    for pattern in tool.where:
        hits = sorted(glob.glob(pattern))
        if hits and os.access(hits[-1], os.X_OK):
            return hits[-1]
    return None


def require(name: str) -> str:
    """The path of ``name``, or :class:`MissingToolError` carrying the install hint.

    Example: ``subprocess.run([hosttools.require("qemu-img"), "info", disk])``
    """
    path = find(name)
    if path is None:
        raise MissingToolError(name, get(name).hint)
    return path


def missing(*scopes: Scope, optional: bool = False) -> list[HostTool]:
    """Tools this host lacks, of the given scopes (all by default); optional ones only
    when ``optional`` is true."""
    return [t for t in TOOLS.values()
            if (not scopes or t.scope in scopes) and (optional or not t.optional)
            and find(t.name) is None]


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        absent = missing(optional=True)
        for t in absent:
            label = "optional, missing" if t.optional else "MISSING"
            print(f"{label} {t.name} ({t.scope}): {t.hint}  -- {t.why}", file=sys.stderr)
        required = [t for t in absent if not t.optional]
        print(f"host tools: {len(TOOLS) - len(absent)} of {len(TOOLS)} found, "
              f"{len(required)} required missing")
        return 1 if required else 0
    for t in TOOLS.values():
        flags = ",".join(f for f, on in (("optional", t.optional), ("base", t.base)) if on)
        print("\t".join([t.name, " ".join(t.packages), t.scope, flags or "-", t.why]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
