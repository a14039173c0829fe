"""Saved images: a running node's disk and memory kept as a golden of its own, which a
cluster can name as a node's image like any recipe (``Cluster.save_node``).

Each lives in ``$ANTRIEB_CACHE/saved/<name>/``: the driver's snapshot files and
``manifest.json`` (written last: a folder without it is an unfinished save), which
records the machine shape a clone must match and where the image came from (cluster,
node, the image it was started from, when).

Example::

    from antrieb.vm import saved
    [m["name"] for m in saved.list_saved()]      # ['web-configured']
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from antrieb import config
from antrieb.errors import ConfigError, InvalidNameError, UnknownImageError

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


def root() -> Path:
    path = config.cache_dir() / "saved"
    path.mkdir(exist_ok=True)
    return path


def exists(name: str) -> bool:
    return bool(_NAME.match(name)) and (root() / name / "manifest.json").exists()


def load(name: str) -> dict[str, Any]:
    """The manifest of a saved image, with its folder as ``dir``."""
    if not exists(name):
        raise UnknownImageError(name, [m["name"] for m in list_saved()])
    data = json.loads((root() / name / "manifest.json").read_text())
    return {**data, "dir": str(root() / name)}


def list_saved() -> list[dict[str, Any]]:
    """Every finished saved image's manifest, newest first."""
    found = []
    for manifest in root().glob("*/manifest.json"):
        try:
            found.append({**json.loads(manifest.read_text()), "dir": str(manifest.parent)})
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda m: m.get("created", 0), reverse=True)


def create(name: str) -> Path:
    """The empty folder of a new saved image (made in place: clones name its disk by
    path). Refuses a bad name, a recipe's name, or one already taken."""
    from antrieb.vm.images import catalogue

    if not _NAME.match(name):
        raise InvalidNameError(f"invalid image name {name!r}: lowercase letters, digits, "
                               f"'.', '-', at most 63 characters")
    if name in catalogue():
        raise ConfigError(f"{name!r} is the name of an image recipe; choose another name")
    folder = root() / name
    if (folder / "manifest.json").exists():
        raise ConfigError(f"a saved image {name!r} exists already; remove it first or "
                          f"choose another name")
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished save of the same name
    folder.mkdir()
    return folder


def finish(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest: from now on the image exists."""
    manifest = {"name": folder.name, "created": time.time(), **manifest}
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(folder / "manifest.json")
    return {**manifest, "dir": str(folder)}


def annotate(name: str, **fields: Any) -> dict[str, Any]:
    """Add ``fields`` to a saved image's manifest (e.g. a package layer's ``kind``)."""
    manifest = load(name)
    folder = Path(manifest.pop("dir"))
    return finish(folder, {**manifest, **fields})


def mark_used(name: str) -> None:
    """Record that a cluster starts from it now (the cache evicts the least recently used)."""
    from antrieb.vm import cachedir

    if _NAME.match(name):
        cachedir.mark_used(root() / name)


def remove(name: str) -> None:
    """Delete a saved image (clones running from it keep their open files)."""
    if not _NAME.match(name):
        raise InvalidNameError(f"invalid image name {name!r}")
    shutil.rmtree(root() / name, ignore_errors=True)
