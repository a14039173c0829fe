"""What is in the cache: its entries, their size on disk, last use, what each needs,
and whether it is in use (see :mod:`antrieb.vm.cachedir`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from antrieb import config
from antrieb.vm import procfs

Kind = Literal["image", "golden", "layer", "saved", "apt-cache"]
MARKER = ".last_used"
# Between finding an entry (mark_used) and a VM opening its files lie other images'
# builds and golden boots of the same cluster: minutes under TCG, so ten of them.
GRACE_S = 600.0
_HASHED = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{12})$")


@dataclass(frozen=True)
class Entry:
    """One entry of the cache. ``key`` is its folder relative to the cache root."""

    kind: Kind
    name: str
    path: Path
    bytes: int  # real disk usage: the blocks of sparse qcow2/raw files, not their length
    last_used: float  # the marker's time (see mark_used), else the newest file's mtime
    in_use: bool = False
    prunable: bool = True
    outdated: bool = False  # can never be used again: evicted before anything else
    why: str = ""  # why it is outdated, kept, in use
    needs: tuple[str, ...] = ()  # keys of the entries it cannot work without

    @property
    def key(self) -> str:
        return self.name if self.kind == "apt-cache" else f"{self.path.parent.name}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "key": self.key, "path": str(self.path),
                "bytes": self.bytes, "last_used": self.last_used, "in_use": self.in_use,
                "prunable": self.prunable, "outdated": self.outdated, "why": self.why,
                "needs": list(self.needs)}


def mark_used(folder: Path | str) -> None:
    """Record that the entry ``folder`` was used now: the mtime of its marker file (atime
    is not kept up to date under relatime). Never fails: without it only LRU order suffers."""
    with contextlib.suppress(OSError):
        (Path(folder) / MARKER).touch()


def lock_path(folder: Path) -> Path:
    """The lock file its builder holds while making ``folder``: images ``.<name>.lock``
    (see :mod:`antrieb.vm.images.cache`), goldens ``<name>.lock``, saved images and layers
    ``.<name>.lock``, all next to the folder."""
    folder = Path(folder)
    if folder.parent.name == "golden":
        return folder.with_name(re.sub(r"\.tmp-\d+$", "", folder.name) + ".lock")
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def locked(folder: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the entry's lock (exclusive flock); yields False instead of waiting when
    ``wait`` is False and another process holds it. Code that makes or changes an entry
    (a layer, say) holds it so that :func:`prune` leaves the entry alone meanwhile."""
    path = lock_path(Path(folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _usage(path: Path) -> tuple[int, float]:
    """(bytes on disk, newest mtime) of a file or folder tree."""
    total, newest = 0, 0.0
    for root, _dirs, files in os.walk(path):
        for name in (".", *files):
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                total += st.st_blocks * 512
                newest = max(newest, st.st_mtime)
    return total, newest


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def qcow2_backing(path: Path) -> Path | None:
    """The backing file named in a qcow2 header (None for another format or none)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != b"QFI\xfb":
                return None
            offset, size = struct.unpack(">QI", head[8:20])
            if not offset or not 0 < size <= 4096:
                return None
            f.seek(offset)
            name = f.read(size).decode()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(name) if name.startswith("/") else path.parent / name


def _current_hashes() -> dict[str, str] | None:
    """Each recipe's content hash (12 digits); None when the recipes cannot be read, so
    that nothing counts as outdated on a guess."""
    from antrieb.vm.images.recipes import catalogue

    try:
        return {name: r.content_hash()[:12] for name, r in catalogue().items()}
    except Exception:  # a broken recipe folder must not make the cache look stale
        return None


def _entry(kind: Kind, path: Path, **kw: Any) -> Entry:
    size, newest = _usage(path)
    with contextlib.suppress(OSError):
        newest = (path / MARKER).stat().st_mtime
    return Entry(kind=kind, name=path.name, path=path, bytes=size, last_used=newest, **kw)


def _images(root: Path, current: dict[str, str] | None) -> list[Entry]:
    from antrieb.vm.images.artifacts import ImageArtifacts

    found = []
    for path in _folders(root / "images"):
        m = _HASHED.match(path.name)
        why = ""
        if ImageArtifacts.load(path) is None:
            why = "incomplete build"
        elif m and current is not None and current.get(m["name"]) != m["hash"]:
            why = ("its recipe changed" if m["name"] in current else "its recipe is gone")
        found.append(_entry("image", path, outdated=bool(why), why=why))
    return found


def _goldens(root: Path, current: dict[str, str] | None) -> list[Entry]:
    found, shapes = [], {}
    for path in _folders(root / "golden"):
        m = _read_json(path / "manifest.json")
        if m is None:
            found.append(_entry("golden", path, outdated=True, why="incomplete snapshot"))
            continue
        image, digest = str(m.get("image", "")), str(m.get("image_hash", ""))[:12]
        why = ""
        if current is not None and current.get(image) != digest:
            why = "its image's recipe changed" if image in current else "its recipe is gone"
        found.append(_entry("golden", path, outdated=bool(why), why=why,
                            needs=_needs(root, path, m, f"images/{image}-{digest}")))
        shape = (image, digest, m.get("driver", "qemu"), m.get("accel"), m.get("mem_mb"),
                 m.get("cpus"))
        shapes.setdefault(shape, []).append((float(m.get("created") or 0), path))
    # of the snapshots of one image and shape, only the newest is the one in use
    superseded = {p for made in shapes.values() for _, p in sorted(made)[:-1]}
    return [replace(e, outdated=True, why="a newer snapshot of the same image and shape "
                    "exists") if e.path in superseded and not e.outdated else e for e in found]


def _saved(root: Path) -> list[Entry]:
    found = []
    for path in _folders(root / "saved"):
        m = _read_json(path / "manifest.json")
        if m is None:
            found.append(_entry("layer", path, outdated=True, why="unfinished save"))
        elif m.get("kind") == "layer":
            found.append(_entry("layer", path, needs=_needs(root, path, m)))
        else:
            found.append(_entry("saved", path, prunable=False, why="user data",
                                needs=_needs(root, path, m)))
    return found


def _needs(root: Path, path: Path, manifest: dict[str, Any], *keys: str) -> tuple[str, ...]:
    """The entries ``path`` cannot work without: the backing files of its qcow2 disks and
    the files its manifest names (a saved image's golden disk, kernel, initramfs)."""
    refs = [qcow2_backing(disk) for disk in path.glob("*.qcow2")]
    refs += [Path(str(manifest[k])) for k in ("base_disk", "kernel", "initrd")
             if manifest.get(k)]
    found = {k for r in refs if r and (k := _key_of(root, r))} | set(keys)
    return tuple(sorted(found - {_key_of(root, path)}))


def _folders(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _key_of(root: Path, path: Path) -> str | None:
    """The key of the entry that holds ``path`` (None outside the managed folders)."""
    try:
        parts = Path(os.path.realpath(path)).relative_to(os.path.realpath(root)).parts
    except ValueError:
        return None
    if parts and parts[0] == "apt-cache":
        return "apt-cache"
    if len(parts) >= 2 and parts[0] in ("images", "golden", "saved"):
        return f"{parts[0]}/{parts[1]}"
    return None


def _pin(found: list[Entry]) -> list[Entry]:
    """What a kept entry needs is kept too; what needs an entry that is gone is broken."""
    by_key = {e.key: e for e in found}
    kept_for: dict[str, str] = {}

    def keep(key: str, holder: str) -> None:
        for need in by_key[key].needs:
            if need in by_key and need not in kept_for:
                kept_for[need] = holder
                keep(need, holder)

    for e in found:
        if not e.prunable:
            keep(e.key, e.key)
    out = []
    for e in found:
        missing = [n for n in e.needs if n not in by_key]
        if e.key in kept_for and e.prunable:
            e = replace(e, prunable=False, why=f"{kept_for[e.key]} needs it")
        elif missing and e.prunable and not e.outdated:
            e = replace(e, outdated=True, why=f"broken: {missing[0]} is gone")
        out.append(e)
    return out


def scan() -> list[Entry]:
    root = config.cache_dir()
    current = _current_hashes()
    found = _images(root, current) + _goldens(root, current) + _saved(root)
    if (root / "apt-cache").is_dir():
        found.append(_entry("apt-cache", root / "apt-cache", prunable=False,
                            why="never evicted: shared package cache"))
    return _pin(found)


def _is_locked(entry: Entry) -> bool:
    path = lock_path(entry.path)
    if entry.kind == "apt-cache" or not path.exists():
        return False
    with locked(entry.path, wait=False) as held:
        return not held


def with_use(found: list[Entry]) -> list[Entry]:
    """``in_use`` filled in: files open in a running process, lock held, or used within
    :data:`GRACE_S`."""
    root = config.cache_dir()
    open_keys = {_key_of(root, Path(p)) for p in procfs.open_files(root)}
    now, out = time.time(), []
    for e in found:
        why = ("open in a running process" if e.key in open_keys
               else "locked: being made or used" if _is_locked(e)
               else f"used in the last {GRACE_S / 60:.0f} minutes"
               if now - e.last_used < GRACE_S else "")
        if why:
            e = replace(e, in_use=True, why=f"{why}; {e.why}" if e.why else why)
        out.append(e)
    return out


def entries() -> list[Entry]:
    """Every entry of the cache, with its size, last use, and whether it may be evicted.

    Example: ``sum(e.bytes for e in cachedir.entries())``
    """
    return with_use(scan())


