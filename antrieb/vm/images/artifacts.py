"""A built image's artefacts (kernel, initramfs, raw ext4 disk) and where they live.

Each image is cached under ``cache_dir()/images/<name>-<hash[:12]>/`` with a
``manifest.json``; :mod:`antrieb.vm.images.cache` builds and finds them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from antrieb import config
from antrieb.vm.images.recipes import Recipe


class ImageArtifacts(BaseModel):
    """A built image: what a VM driver needs to boot it. Stored as ``manifest.json``."""

    name: str
    content_hash: str
    dir: Path
    kernel: Path
    initrd: Path
    disk: Path
    kernel_version: str
    suite: str
    packages: list[str] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)
    built_at: float
    build_seconds: float = 0.0

    def write_manifest(self) -> Path:
        """Write ``manifest.json`` (paths relative to the artefact dir) atomically."""
        doc = self.model_dump(mode="json", exclude={"dir"})
        for key in ("kernel", "initrd", "disk"):
            doc[key] = getattr(self, key).name
        path = self.dir / "manifest.json"
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> ImageArtifacts | None:
        """The artefacts in ``directory``, or None unless the manifest and files are complete."""
        try:
            doc = json.loads((directory / "manifest.json").read_text())
            doc["dir"] = directory
            for key in ("kernel", "initrd", "disk"):
                doc[key] = directory / doc[key]
            art = cls.model_validate(doc)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all(p.is_file() for p in (art.kernel, art.initrd, art.disk)):
            return None
        return art


def images_root() -> Path:
    """Where built images live: ``cache_dir()/images``."""
    root = config.cache_dir() / "images"
    root.mkdir(parents=True, exist_ok=True)
    return root


def artifact_dir(recipe: Recipe) -> Path:
    return images_root() / f"{recipe.name}-{recipe.content_hash()[:12]}"
