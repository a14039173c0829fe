"""Golden snapshots tell the managed cache (:mod:`antrieb.vm.cachedir`) when they are
used, and a new one prunes it. No VM: the snapshot itself is faked."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from antrieb.vm import cachedir
from antrieb.vm.accel import Accel
from antrieb.vm.libvirt import golden as libvirt_golden
from antrieb.vm.qemu import golden as qemu_golden

IMAGE = SimpleNamespace(name="base", content_hash="a" * 64, kernel="k", initrd="i", disk="d")


@pytest.mark.parametrize("driver", [qemu_golden, libvirt_golden])
def test_a_golden_found_is_marked_and_a_new_one_prunes(driver, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    monkeypatch.setattr(driver, "golden_key", lambda *a: "f" * 64)
    monkeypatch.setattr(driver, "kernel_append", lambda *a, **kw: "console=ttyS0")
    pruned: list[int] = []
    monkeypatch.setattr(cachedir, "auto_prune", lambda: pruned.append(1) or [])

    def make(image, final, **kw):
        final.mkdir()
        (final / "manifest.json").write_text(json.dumps({"host_key": "k", "cold_boot_s": 1}))

    monkeypatch.setattr(driver, "_make_golden", make)
    golden = driver.ensure_golden(IMAGE, accel=Accel("kvm", "test"))
    assert (golden.dir / ".last_used").exists() and pruned == [1]
    (golden.dir / ".last_used").unlink()
    driver.ensure_golden(IMAGE, accel=Accel("kvm", "test"))
    assert (golden.dir / ".last_used").exists() and pruned == [1]  # found: no prune


def test_a_saved_image_started_from_is_marked(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    monkeypatch.setattr(qemu_golden, "qemu_version", lambda: "QEMU 7.2")
    folder = tmp_path / "saved" / "web"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "name": "web", "accel": "kvm", "mem_mb": 512, "cpus": 1, "qemu": "QEMU 7.2",
        "base_disk": str(folder / "manifest.json"), "key": "k", "kernel": "k", "initrd": "i",
        "append": "", "host_key": "h"}))
    qemu_golden.saved_golden("web", accel="kvm", mem_mb=512, cpus=1)
    assert (folder / ".last_used").exists()
