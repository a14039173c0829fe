"""Eviction: the cache limit and least-recently-used pruning down to it (see
:mod:`antrieb.vm.cachedir`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

from antrieb import config, events
from antrieb.errors import ConfigError
from antrieb.vm import procfs
from antrieb.vm.cachedir.scan import MARKER, Entry, locked, scan, with_use

TRASH = ".trash"  # evicted entries are renamed into it, then deleted
EVICTED = ".evicted-"  # the same, where a rename into TRASH fails
# All shipped recipes built, with a golden per driver, take ~3.5 GB here (an image
# ~0.5 GB, a golden ~0.15 GB, the apt cache ~0.3 GB); 8 GiB leaves room for a dozen
# layers. On a small disk a quarter of it, so the cache never fills the disk.
DEFAULT_MAX = 8 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from ``500M``, ``20G``, ``1.5T``, ``2GiB`` or plain bytes (binary units:
    1K = 1024). Anything else is a :class:`ConfigError` naming ``what``.

    Example: ``parse_size("1.5G") == 1610612736``
    """
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"{what}: {text!r} is not a size; give bytes or a number with K, M, "
                          f"G or T (1K = 1024), e.g. 500M, 20G, 1.5T")
    unit = _UNITS[m[2].lower()]
    return int(m[1]) * unit if m[1].isdigit() else int(float(m[1]) * unit)


def max_bytes() -> int:
    """The cache limit: ``ANTRIEB_CACHE_MAX``, else :data:`DEFAULT_MAX` or a quarter of
    the cache's file system, whichever is smaller."""
    text = config.setting("cache_max")
    if text is not None and text.strip():
        return parse_size(text, "ANTRIEB_CACHE_MAX")
    try:
        disk = shutil.disk_usage(config.cache_dir()).total
    except OSError:
        return DEFAULT_MAX
    return min(DEFAULT_MAX, disk // 4)


_configured_max = max_bytes  # prune's parameter of the same name hides it there


def prune(max_bytes: int | None = None, dry_run: bool = False) -> list[Entry]:
    """Evict prunable entries until the cache's total is at most ``max_bytes`` (default
    :func:`max_bytes`): outdated ones first, then the least recently used; never one
    another remaining entry needs, one in use, or a saved user image. Returns what was
    (``dry_run``: would be) evicted, in order; emits :class:`~antrieb.events.CacheEvicted`
    for each. The total may stay over the limit when what is left must be kept.

    Example: ``[e.key for e in prune(parse_size("5G"), dry_run=True)]``
    """
    limit = _configured_max() if max_bytes is None else max_bytes
    if not dry_run:
        _sweep_trash()
    left = scan()
    total = sum(e.bytes for e in left)
    if total <= limit:
        return []
    left = with_use(left)
    evicted: list[Entry] = []
    skipped: set[str] = set()  # locked or used meanwhile: kept, and so is what it needs
    while total > limit:
        needed = {n for e in left for n in e.needs}
        candidates = [e for e in left if e.prunable and not e.in_use
                      and e.key not in needed | skipped]
        if not candidates:
            break
        entry = min(candidates, key=lambda e: (not e.outdated, e.last_used, e.key))
        if dry_run or _evict(entry):
            left.remove(entry)
            evicted.append(entry)
            total -= entry.bytes
        else:
            skipped.add(entry.key)
    return evicted


def auto_prune() -> list[Entry]:
    """:func:`prune` after something new landed in the cache (an image build, a golden, a
    layer). Never raises: a failed prune must not fail the work that called it."""
    try:
        return prune()
    except Exception as exc:
        print(f"antrieb: pruning the cache failed: {exc}", file=sys.stderr)
        return []


def _evict(entry: Entry) -> bool:
    """Delete one entry under its lock; False if the lock is held or it was used since
    the scan."""
    with locked(entry.path, wait=False) as held:
        if not held or not entry.path.is_dir():
            return False
        with contextlib.suppress(OSError):
            if (entry.path / MARKER).stat().st_mtime > entry.last_used:
                return False  # mark_used since we looked: someone wants it
        doomed = _trash_root() / f"{os.getpid()}-{entry.path.parent.name}-{entry.name}-" \
                                 f"{uuid.uuid4().hex[:8]}"
        try:
            os.rename(entry.path, doomed)
        except OSError:  # another file system: invalidate it first, then rename in place
            doomed = entry.path.with_name(f"{EVICTED}{os.getpid()}-{entry.name}")
            try:
                (entry.path / "manifest.json").unlink(missing_ok=True)
                os.rename(entry.path, doomed)
            except OSError as exc:
                print(f"antrieb: cannot evict {entry.key}: {exc}", file=sys.stderr)
                return False
    shutil.rmtree(doomed, ignore_errors=True)
    reason = f"outdated: {entry.why}" if entry.outdated else "least recently used"
    events.emit(events.CacheEvicted(entry_kind=entry.kind, name=entry.name, bytes=entry.bytes,
                                    reason=reason))
    return True


def _trash_root() -> Path:
    path = config.cache_dir() / TRASH
    path.mkdir(exist_ok=True)
    return path


def _sweep_trash() -> None:
    """Finish deletions a killed prune left behind (those whose pid is gone)."""
    root = config.cache_dir()
    left = [*_trash_root().iterdir()]
    for kind in ("images", "golden", "saved"):
        left += (root / kind).glob(f"{EVICTED}*")
    for doomed in sorted(left):
        pid = doomed.name.removeprefix(EVICTED).partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and procfs.stat_fields(int(pid)):
            continue  # another prune is deleting it right now
        shutil.rmtree(doomed, ignore_errors=True)
