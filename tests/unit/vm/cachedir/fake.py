"""A small real cache on disk, laid out as the builders lay it out: image builds, golden
snapshots whose qcow2 disk names its image's disk as backing file, saved images and
layers on a golden. Files are small and real (their blocks count); no VM is involved."""

from __future__ import annotations

import json
import os
import struct
import textwrap
import time
from pathlib import Path

import pytest

from antrieb.vm.cachedir.scan import MARKER
from antrieb.vm.images import ImageArtifacts, get_recipe

RECIPE = """\
name: base
description: a base
suite: bookworm
packages: [systemd-sysv, openssh-server, python3]
"""
BLOCK = 64 * 1024


def qcow2(path: Path, backing: Path, size: int = BLOCK) -> None:
    """A file with a qcow2 header naming ``backing`` (what ``qemu-img create -b`` writes)."""
    name = str(backing).encode()
    head = b"QFI\xfb" + struct.pack(">IQI", 3, 512, len(name))
    body = head.ljust(512, b"\0") + name
    path.write_bytes(body.ljust(size, b"q"))


class FakeCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def current(self) -> str:
        return get_recipe("base").content_hash()[:12]

    def image(self, digest: str | None = None, *, size: int = 4 * BLOCK,
              used: float = 7200) -> Path:
        folder = self.root / "images" / f"base-{digest or self.current}"
        folder.mkdir(parents=True)
        for name in ("vmlinuz", "initrd.img"):
            (folder / name).write_bytes(b"k" * BLOCK)
        (folder / "disk.raw").write_bytes(b"d" * size)
        ImageArtifacts(name="base", content_hash=(digest or self.current) + "0" * 52,
                       dir=folder, kernel=folder / "vmlinuz", initrd=folder / "initrd.img",
                       disk=folder / "disk.raw", kernel_version="6.1", suite="bookworm",
                       built_at=1.0).write_manifest()
        return self.used(folder, used)

    def golden(self, image: Path, key: str, *, driver: str = "qemu", created: float = 1.0,
               used: float = 7200) -> Path:
        tag = "-libvirt" if driver == "libvirt" else ""
        folder = self.root / "golden" / f"base{tag}-{key}"
        folder.mkdir(parents=True)
        (folder.parent / f"{folder.name}.lock").touch()
        qcow2(folder / "disk.qcow2", image / "disk.raw")
        (folder / "mem").write_bytes(b"m" * 2 * BLOCK)
        digest = image.name.rpartition("-")[2] + "0" * 52
        manifest = {"image": "base", "image_hash": digest, "key": key, "accel": "tcg",
                    "mem_mb": 512, "cpus": 1, "host_key": "k", "cold_boot_s": 1.0,
                    "created": created, "driver": driver}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return self.used(folder, used)

    def saved(self, name: str, golden: Path, *, layer: bool = False, used: float = 7200,
              size: int = BLOCK) -> Path:
        folder = self.root / "saved" / name
        folder.mkdir(parents=True)
        qcow2(folder / "disk.qcow2", golden / "disk.qcow2", size)
        (folder / "mem").write_bytes(b"m" * BLOCK)
        image_hash = json.loads((golden / "manifest.json").read_text())["image_hash"]
        image = self.root / "images" / f"base-{image_hash[:12]}"
        manifest = {"name": name, "created": 1.0, "base_disk": str(golden / "disk.qcow2"),
                    "kernel": str(image / "vmlinuz"), "initrd": str(image / "initrd.img")}
        if layer:
            manifest["kind"] = "layer"
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return self.used(folder, used)

    def used(self, folder: Path, seconds_ago: float) -> Path:
        """Set the entry's last use ``seconds_ago`` (its marker and, for entries without
        one, its files)."""
        at = time.time() - seconds_ago
        (folder / MARKER).touch()
        for f in [folder, *folder.rglob("*")]:
            os.utime(f, (at, at))
        return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> FakeCache:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "base.yaml").write_text(textwrap.dedent(RECIPE))
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(recipes))
    monkeypatch.delenv("ANTRIEB_CACHE_MAX", raising=False)
    (tmp_path / "cache").mkdir()
    return FakeCache(tmp_path / "cache")
