"""The initramfs builder: module dependency order, decompression, the cpio archive."""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from antrieb.vm.images import initramfs
from antrieb.vm.images.initramfs import build_initramfs, load_order, module_name, parse_modules_dep

MODULES_DEP = """\
kernel/drivers/virtio/virtio_mmio.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
"""  # noqa: E501  (modules.dep lines are long)


@pytest.mark.parametrize("path,name", [
    ("kernel/drivers/virtio/virtio_mmio.ko.xz", "virtio_mmio"),
    ("kernel/fs/ext4/ext4.ko", "ext4"),
    ("kernel/drivers/net/virtio-net.ko.zst", "virtio_net"),
    ("kernel/x/crc32c_generic.ko.gz", "crc32c_generic"),
])
def test_module_name(path, name):
    assert module_name(path) == name


def test_load_order_puts_dependencies_first_and_skips_builtin():
    deps = parse_modules_dep(MODULES_DEP)
    order = [module_name(p) for p in load_order(
        ["virtio_mmio", "virtio_net", "virtio_blk", "ext4"], deps, builtin={"ext4"})]
    assert order == ["virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover",
                     "virtio_net", "virtio_blk"]
    for path, needs in deps.items():
        if module_name(path) in order:
            assert all(order.index(module_name(n)) < order.index(module_name(path)) for n in needs)


def test_builtin_transport_is_skipped():
    deps = parse_modules_dep(MODULES_DEP)
    order = load_order(["virtio_pci", "virtio_blk"], deps, builtin={"virtio_pci"})
    assert [module_name(p) for p in order] == ["virtio_ring", "virtio", "virtio_blk"]


def test_unknown_module_is_reported():
    with pytest.raises(KeyError, match="virtio_console"):
        load_order(["virtio_console"], parse_modules_dep(MODULES_DEP), builtin=set())


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)) of a newc cpio archive."""
    entries = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body_start = (name_start + namesize + 3) & ~3
        body = data[body_start:body_start + size]
        pos = (body_start + size + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, (rmaj, rmin))


@pytest.fixture
def fake_rootfs(tmp_path: Path) -> Path:
    moddir = tmp_path / "rootfs/lib/modules/6.1.0-9-cloud-amd64"
    for path in parse_modules_dep(MODULES_DEP):
        f = moddir / path
        f.parent.mkdir(parents=True, exist_ok=True)
        payload = f"\x7fELF module {module_name(path)}".encode()
        f.write_bytes(lzma.compress(payload) if path.endswith(".xz") else payload)
    (moddir / "modules.dep").write_text(MODULES_DEP)
    (moddir / "modules.builtin").write_text(
        "kernel/fs/ext4/ext4.ko\nkernel/drivers/virtio/virtio_pci.ko\n"
        "kernel/drivers/char/virtio_console.ko\n")
    return tmp_path / "rootfs"


def test_build_initramfs(tmp_path, fake_rootfs):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake busybox")
    out = tmp_path / "initrd.img"
    names = build_initramfs(fake_rootfs, "6.1.0-9-cloud-amd64", out, busybox=busybox)
    assert names == ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover",
                     "net_failover", "virtio_net"]
    entries = read_newc(gzip.decompress(out.read_bytes()))
    mode, body, _ = entries["init"]
    assert body == initramfs.INIT_SCRIPT.read_bytes() and mode & 0o111
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)
    assert entries["bin/busybox"][1] == b"\x7fELF fake busybox"
    assert entries["etc/antrieb-modules"][1].decode().split() == [f"{n}.ko" for n in names]
    assert entries["lib/modules/virtio_mmio.ko"][1] == b"\x7fELF module virtio_mmio"  # unpacked
    assert {"proc", "sys", "newroot"} <= {n for n, e in entries.items() if stat.S_ISDIR(e[0])}
    # reproducible: same inputs, same bytes
    again = tmp_path / "again.img"
    build_initramfs(fake_rootfs, "6.1.0-9-cloud-amd64", again, busybox=busybox)
    assert again.read_bytes() == out.read_bytes()
    if shutil.which("cpio"):  # and the real tool agrees it is a valid archive
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(out.read_bytes()),
                                 capture_output=True, check=True).stdout.decode().split()
        assert "init" in listing and "lib/modules/virtio_net.ko" in listing


def test_init_script_has_the_markers_and_parses():
    text = initramfs.INIT_SCRIPT.read_text()
    assert "ANTRIEB-PROBE-OK" in text and "ANTRIEB-ROOT-MOUNT-FAILED" in text
    assert "antrieb.probe" in text and "switch_root" in text
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell
    subprocess.run([shell, "-n", str(initramfs.INIT_SCRIPT)], check=True)


def test_static_elf_detection():
    assert not initramfs.is_static_elf(Path(sys.executable).resolve())
    if initramfs.BUSYBOX.exists():
        assert isinstance(initramfs.is_static_elf(initramfs.BUSYBOX), bool)
