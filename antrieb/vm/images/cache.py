"""Building images once and finding them again: the cache of built images.

Example::

    from antrieb.vm import images
    art = images.ensure("debian-12")     # builds once (minutes), then returns at once
    art.kernel, art.initrd, art.disk
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from antrieb import events
from antrieb.vm import cachedir
from antrieb.vm.images import builder
from antrieb.vm.images.artifacts import ImageArtifacts, artifact_dir, images_root
from antrieb.vm.images.recipes import catalogue, get_recipe


@contextlib.contextmanager
def _locked(path: Path, image: str) -> Iterator[None]:
    """An exclusive flock: one build of an image at a time, across processes."""
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            events.emit(events.ImageBuildProgress(image=image, step="wait",
                                                  detail="another process is building it"))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(name: str, *, force: bool = False) -> ImageArtifacts:
    """Build image ``name`` (or return the cached one unless ``force``).

    The build happens in a temporary folder next to the cache entry, renamed into place
    when complete: an interrupted build leaves nothing behind that looks built.
    Raises :class:`ImageBuildError` (with the failing step and its output),
    :class:`MissingToolError` or :class:`ConfigError`.
    """
    recipe = get_recipe(name)
    digest = recipe.content_hash()
    final = images_root() / f"{name}-{digest[:12]}"
    started = time.monotonic()
    with _locked(images_root() / f".{final.name}.lock", name):
        if not force:
            art = ImageArtifacts.load(final)
            if art is not None:
                cachedir.mark_used(final)
                events.emit(events.ImageBuilt(image=name, content_hash=digest,
                                              seconds=time.monotonic() - started, cached=True))
                return art
        builder.preflight()
        for stale in images_root().glob(f".{final.name}.tmp-*"):
            builder.remove_tree(stale)  # left by a crashed build; we hold the lock
        tmp = images_root() / f".{final.name}.tmp-{os.getpid()}"
        try:
            art = builder.build_into(recipe, digest, tmp)
            if final.exists():
                builder.remove_tree(final)
            os.rename(tmp, final)
        except BaseException:
            builder.remove_tree(tmp)
            raise
    art = ImageArtifacts.load(final)
    assert art is not None, "a just-built image must load"
    cachedir.mark_used(final)
    events.emit(events.ImageBuilt(image=name, content_hash=digest,
                                  seconds=time.monotonic() - started, cached=False))
    cachedir.auto_prune()
    return art


def ensure(name: str) -> ImageArtifacts:
    """The built image ``name``: from the cache when its hash matches, else built now."""
    return build(name, force=False)


def _disk_usage(path: Path) -> int:
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_blocks * 512  # sparse disks count what they use
    return total


def list_images() -> list[dict[str, Any]]:
    """Every recipe with its hash and whether (and where, how big) it is built."""
    rows = []
    for name, recipe in catalogue().items():
        path = artifact_dir(recipe)
        built = ImageArtifacts.load(path) is not None
        rows.append({
            "name": name, "description": recipe.description, "suite": recipe.suite,
            "extends": recipe.extends, "packages": list(recipe.packages),
            "hash": recipe.content_hash(), "built": built,
            "size": _disk_usage(path) if built else 0, "path": str(path),
        })
    return rows


def prune(name: str | None = None) -> list[Path]:
    """Remove built images whose hash no longer matches their recipe (or whose recipe is
    gone), for image ``name`` or all; returns what was removed. Skips images being built."""
    current = {r.name: r.content_hash()[:12] for r in catalogue().values()}
    removed = []
    for entry in sorted(images_root().iterdir()):
        m = re.match(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{12})$", entry.name)
        if not entry.is_dir() or not m or (name and m["name"] != name):
            continue
        if current.get(m["name"]) == m["hash"]:
            continue
        lock = images_root() / f".{entry.name}.lock"
        with lock.open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            builder.remove_tree(entry)
            removed.append(entry)
        lock.unlink(missing_ok=True)
    return removed
