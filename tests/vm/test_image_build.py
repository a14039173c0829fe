"""A real image build (or the cached one) of debian-12, checked from the outside.

Needs root, mmdebstrap and the other build tools, and the host's Debian mirror; the
first run takes about a minute, later runs reuse the cached image.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from antrieb.errors import MissingToolError
from antrieb.vm import images
from antrieb.vm.images import builder as build
from antrieb.vm.images import contents
from antrieb.vm.net.mirror import debian_upstreams
from antrieb.vm.net.plan import APT_PSEUDO_HOST, GATEWAY_IP, PROXY_PORT

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def art() -> images.ImageArtifacts:
    try:
        build.preflight()
    except MissingToolError as exc:
        pytest.skip(str(exc))
    return images.ensure("debian-12")


def debugfs(disk: Path, request: str) -> str:
    """Read from the ext4 image without mounting it."""
    return subprocess.run(["debugfs", "-R", request, str(disk)], capture_output=True,
                          text=True, check=True).stdout


def test_manifest_and_files(art):
    assert art.suite == "bookworm" and art.kernel_version.endswith("-cloud-amd64")
    assert art.content_hash == images.get_recipe("debian-12").content_hash()
    assert art.dir.name == f"debian-12-{art.content_hash[:12]}"
    assert images.ImageArtifacts.load(art.dir) == art
    assert art.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    assert art.disk.stat().st_size == 4 << 30
    assert art.disk.stat().st_blocks * 512 < art.disk.stat().st_size  # sparse
    assert not list(art.dir.parent.glob(f".{art.dir.name}.tmp-*"))


def test_initrd_has_probe_support_and_modules(art):
    data = gzip.decompress(art.initrd.read_bytes())
    assert b"ANTRIEB-PROBE-OK" in data and b"antrieb.probe" in data
    assert b"ANTRIEB-ROOT-MOUNT-FAILED" in data
    assert "virtio_mmio" in art.modules and "virtio_blk" in art.modules
    for name in art.modules:
        assert f"lib/modules/{name}.ko".encode() in data


def test_disk_contents(art):
    agent = debugfs(art.disk, "cat /usr/local/lib/antrieb/agent.py")
    assert agent == contents.AGENT.read_text()
    assert "antrieb-agent.service" in debugfs(
        art.disk, "ls /etc/systemd/system/multi-user.target.wants")
    sources = debugfs(art.disk, "cat /etc/apt/sources.list")
    assert f"http://{APT_PSEUDO_HOST}/debian bookworm main" in sources
    assert f"http://{APT_PSEUDO_HOST}/debian-security bookworm-security main" in sources
    for url in debian_upstreams().values():
        assert urlsplit(url).hostname not in sources
    proxy = debugfs(art.disk, "cat /etc/apt/apt.conf.d/00antrieb-proxy")
    assert f"http://{GATEWAY_IP}:{PROXY_PORT}" in proxy
    assert "99mmdebstrap" not in debugfs(art.disk, "ls /etc/apt/apt.conf.d")
    lists = debugfs(art.disk, "ls /var/lib/apt/lists")
    assert "bookworm_main_binary-amd64_Packages" in lists and "bookworm_InRelease" in lists
    assert debugfs(art.disk, "cat /etc/resolv.conf") == ""
    keys = debugfs(art.disk, "ls /etc/ssh")
    assert "ssh_host_ed25519_key" in keys and "ssh_host_rsa_key" not in keys
    client = debugfs(art.disk, "cat /etc/ssh/ssh_config.d/antrieb.conf")
    assert "StrictHostKeyChecking yes" in client  # every node has its own host key
    assert "GlobalKnownHostsFile /run/antrieb/known_hosts" in client
    assert "modules.dep" in debugfs(art.disk, f"ls /usr/lib/modules/{art.kernel_version}")


def test_ensure_reuses_the_cache(art):
    from antrieb import events
    seen: list = []
    with events.subscribed(seen.append):
        again = images.ensure("debian-12")
    assert again == art
    assert [e.kind for e in seen] == ["image_built"] and seen[0].cached


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86")
def test_probe_boot_prints_marker(art, tmp_path):
    from antrieb.vm.accel import host_tsc_khz
    from antrieb.vm.qemu.argv import kernel_append

    # Same command line as real boots: without tsc_early_khz about one TCG boot in five
    # hangs calibrating the TSC against a PIT that microvm emulates poorly.
    append = kernel_append(accel="tcg", tsc_khz=host_tsc_khz(), extra="antrieb.probe")
    # Like every boot antrieb makes, one retry: a TCG boot on a busy host can still hang.
    for attempt in range(2):
        console = tmp_path / f"console-{attempt}.log"
        qemu = subprocess.Popen([
            "qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on",
            "-accel", "tcg,thread=multi", "-cpu", "max", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", str(art.kernel), "-initrd", str(art.initrd), "-append", append,
            "-serial", f"file:{console}",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and qemu.poll() is None:
                time.sleep(0.1)
            if "ANTRIEB-PROBE-OK" in console.read_text(errors="replace"):
                assert qemu.poll() is not None, "poweroff -f should end QEMU"
                return
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
    pytest.fail(f"no probe marker in two boots; console:\n{console.read_text()[-2000:]}")
