"""antrieb's own small initramfs: static busybox, the virtio modules, one /init script.

Debian's cloud kernel builds the virtio drivers as modules, so something has to load
them before the root disk can be mounted. initramfs-tools would do it, but takes
long to build and boot under emulation; this one is a few hundred KB and hands over
to systemd in well under a second. The cpio archive is written here directly (newc
format), so device nodes need no root and the result is byte-for-byte reproducible.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

from antrieb import hosttools

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
INIT_SCRIPT = GUEST_DIR / "initramfs-init.sh"
BUSYBOX = Path("/bin/busybox")

# What the guest needs before its root disk: the virtio transports (mmio for microvm,
# pci for q35/libvirt), the disk, the NIC, the agent's serial port, and the root fs.
WANTED_MODULES = ("virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
                  "ext4")
_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(path: str) -> str:
    """``kernel/drivers/virtio/virtio_mmio.ko.xz`` -> ``virtio_mmio``.

    The kernel treats ``-`` and ``_`` in module names alike; ``_`` is canonical.
    """
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep as {module path: [dependency paths]} (paths relative to the module dir)."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path.strip()] = rest.split()
    return deps


def load_order(wanted: Iterable[str], deps: dict[str, list[str]], builtin: set[str]) -> list[str]:
    """Module paths to insmod, dependencies first; built-in modules are skipped.

    Raises KeyError naming a wanted module that is neither a module nor built in.
    """
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, stack: tuple[str, ...]) -> None:
        if path in seen or path in stack:
            return
        for dep in deps.get(path, []):
            visit(dep, (*stack, path))
        seen.add(path)
        order.append(path)

    for name in wanted:
        name = name.replace("-", "_")
        if name in builtin:
            continue
        if name not in by_name:
            raise KeyError(name)
        visit(by_name[name], ())
    return order


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        # Python 3.11 has no zstd; the zstd CLI is a build prerequisite on such kernels.
        zstd = hosttools.find("zstd")
        if zstd is None:
            raise FileNotFoundError("zstd (apt-get install zstd) is needed for .ko.zst modules")
        return subprocess.run([zstd, "-dc", str(path)], check=True, capture_output=True).stdout
    return data


class CpioWriter:
    """A minimal writer of the ``newc`` cpio format the kernel unpacks into its rootfs."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def build_initramfs(rootfs: Path, kernel_version: str, out: Path, *,
                    wanted: Iterable[str] = WANTED_MODULES, busybox: Path = BUSYBOX) -> list[str]:
    """Write a gzip'd newc initramfs to ``out``; returns the module names it loads, in order.

    Modules and their dependencies come from ``rootfs/lib/modules/<kernel_version>``
    (modules.dep and modules.builtin, so ``depmod`` must have run there).
    """
    moddir = rootfs / "lib" / "modules" / kernel_version
    deps = parse_modules_dep((moddir / "modules.dep").read_text())
    builtin_file = moddir / "modules.builtin"
    builtin = ({module_name(line) for line in builtin_file.read_text().split()}
               if builtin_file.exists() else set())
    order = load_order(wanted, deps, builtin)

    cpio = CpioWriter()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys"):
        cpio.directory(d)
    # The kernel opens /dev/console for /init before devtmpfs is mounted: without this
    # node the init script's output (and the probe marker) would go nowhere.
    cpio.char_device("dev/console", 5, 1)
    cpio.char_device("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    names = []
    for path in order:
        name = module_name(path)
        cpio.file(f"lib/modules/{name}.ko", _decompress(moddir / path))
        names.append(name)
    cpio.file("etc/antrieb-modules", "".join(f"{n}.ko\n" for n in names).encode())
    tmp = out.with_name(out.name + ".tmp")
    # mtime=0 keeps the archive reproducible for identical inputs.
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    tmp.replace(out)
    return names


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a program interpreter (statically linked)."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # only 64-bit ELF is expected here
            return False
        e_phoff, = struct.unpack_from("<Q", head, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", head, 54)
        f.seek(e_phoff)
        table = f.read(e_phentsize * e_phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * e_phentsize)[0] != pt_interp
               for i in range(e_phnum))
