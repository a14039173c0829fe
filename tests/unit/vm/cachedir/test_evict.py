"""Eviction: the limit, its order (outdated, then least recently used, leaves first), and
its safety (locks, files in use, deletions cut short, dry runs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from antrieb import events
from antrieb.errors import ConfigError
from antrieb.vm import cachedir, saved
from antrieb.vm.cachedir import evict
from antrieb.vm.images import ImageArtifacts
from antrieb.vm.images import cache as image_cache

G, M, K = 1 << 30, 1 << 20, 1 << 10


@pytest.mark.parametrize("text,size", [
    ("500M", 500 * M), ("20G", 20 * G), ("1.5T", 3 * G * 512), ("123", 123), ("2GiB", 2 * G),
    ("64k", 64 * K), (" 10 g ", 10 * G), ("0", 0), (".5G", G // 2), ("7B", 7),
])
def test_sizes(text, size):
    assert cachedir.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "abc", "-1G", "1.5.5G", "10X", "1e9", "5 G B",
                                  "twenty gigs", "20GG"])
def test_garbage_is_a_config_error(text):
    with pytest.raises(ConfigError, match="is not a size"):
        cachedir.parse_size(text)


def test_limit_from_the_environment_or_a_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", "20G")
    assert cachedir.max_bytes() == 20 * G
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", "lots")
    with pytest.raises(ConfigError, match="ANTRIEB_CACHE_MAX: 'lots'"):
        cachedir.max_bytes()
    monkeypatch.delenv("ANTRIEB_CACHE_MAX")
    assert 0 < cachedir.max_bytes() <= cachedir.DEFAULT_MAX == 8 * G


def world(cache):
    """Outdated build + its snapshot (used most recently of all), the current build + its
    snapshot, two layers on it used at different times."""
    old = cache.image("0123456789ab", used=600 + 60)
    on_old = cache.golden(old, "b" * 12, used=600 + 60)
    cur = cache.image(used=50_000)
    golden = cache.golden(cur, "c" * 12, used=40_000)
    lru = cache.saved("lru", golden, layer=True, used=90_000)
    recent = cache.saved("recent", golden, layer=True, used=30_000)
    return SimpleNamespace(old=old, on_old=on_old, cur=cur, golden=golden, lru=lru,
                           recent=recent)


def folders(parent) -> list[str]:
    return [p.name for p in parent.iterdir() if p.is_dir()]


def total() -> int:
    return sum(e.bytes for e in cachedir.entries())


def test_outdated_first_then_lru_leaves_before_what_they_need(cache):
    w = world(cache)
    seen: list = []
    with events.subscribed(seen.append):
        gone = cachedir.prune(0)
    assert [e.path for e in gone] == [w.on_old, w.old, w.lru, w.recent, w.golden, w.cur]
    assert not any(p.exists() for p in (w.old, w.on_old, w.cur, w.golden, w.lru, w.recent))
    evicted = [e for e in seen if isinstance(e, events.CacheEvicted)]
    assert [(e.entry_kind, e.name) for e in evicted] == [(x.kind, x.name) for x in gone]
    assert evicted[0].reason == "outdated: its image's recipe changed"
    assert evicted[2].reason == "least recently used"


def test_stops_once_under_the_limit(cache):
    w = world(cache)
    sizes = {e.path: e.bytes for e in cachedir.entries()}
    limit = total() - sizes[w.old] - sizes[w.on_old] - 1  # one more byte: one layer must go
    gone = cachedir.prune(limit)
    assert [e.path for e in gone] == [w.on_old, w.old, w.lru]
    assert w.recent.exists() and w.golden.exists() and w.cur.exists()
    assert total() <= limit
    assert cachedir.prune(limit) == []


def test_saved_user_images_and_what_they_need_stay(cache):
    w = world(cache)
    mine = cache.saved("mine", w.golden)
    (cache.root / "apt-cache").mkdir()
    (cache.root / "apt-cache" / "pkg.deb").write_bytes(b"p" * 4096)
    gone = cachedir.prune(0)
    assert {e.path for e in gone} == {w.old, w.on_old, w.lru, w.recent}
    assert mine.exists() and w.golden.exists() and w.cur.exists()
    assert saved.exists("mine") and (cache.root / "apt-cache" / "pkg.deb").exists()


def test_the_limit_from_the_environment(cache, monkeypatch):
    w = world(cache)
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", str(total() - 1))
    assert [e.path for e in cachedir.prune()] == [w.on_old]


def test_a_locked_entry_is_skipped_and_so_is_what_it_needs(cache):
    w = world(cache)
    with cachedir.locked(w.on_old), image_cache._locked(cachedir.lock_path(w.lru), "x"):
        gone = cachedir.prune(0)
    assert w.on_old.exists() and w.old.exists() and w.lru.exists()
    assert [e.path for e in gone] == [w.recent]  # golden and cur stay: lru needs them
    # the image builder's own lock (the same file) keeps a build from being evicted
    assert cachedir.lock_path(w.old) == w.old.parent / f".{w.old.name}.lock"
    with image_cache._locked(cachedir.lock_path(w.old), "base"):
        assert w.old not in [e.path for e in cachedir.prune(0)]


def test_in_use_or_just_used_entries_stay(cache):
    w = world(cache)
    cachedir.mark_used(w.recent)
    with (w.lru / "mem").open("rb"):
        gone = cachedir.prune(0)
    assert {e.path for e in gone} == {w.old, w.on_old}


def test_used_between_the_scan_and_the_eviction(cache, monkeypatch):
    w = world(cache)
    real = cachedir.locked

    def use_then_lock(folder, **kw):
        cachedir.mark_used(folder)  # someone found it in the cache meanwhile
        return real(folder, **kw)

    monkeypatch.setattr(evict, "locked", use_then_lock)
    assert cachedir.prune(0) == []
    assert w.on_old.exists() and w.old.exists()


def test_dry_run_deletes_nothing(cache):
    w = world(cache)
    seen: list = []
    before = total()
    with events.subscribed(seen.append):
        gone = cachedir.prune(0, dry_run=True)
    assert [e.path for e in gone] == [w.on_old, w.old, w.lru, w.recent, w.golden, w.cur]
    assert all(p.exists() for p in vars(w).values()) and total() == before and seen == []


def test_a_deletion_cut_short_leaves_nothing_that_looks_valid(cache, monkeypatch):
    old = cache.image("0123456789ab")
    golden = cache.golden(cache.image(), "c" * 12)
    layer = cache.saved("web", golden, layer=True)

    def killed(path, ignore_errors=False):
        (path / "manifest.json").unlink(missing_ok=True)  # deleted in part...
        raise KeyboardInterrupt  # ...then the process died

    monkeypatch.setattr(evict.shutil, "rmtree", killed)
    monkeypatch.setattr(evict, "_sweep_trash", lambda: None)
    for victim in (old, layer):
        with pytest.raises(KeyboardInterrupt):
            cachedir.prune(0)
        assert not victim.exists()
    assert ImageArtifacts.load(old) is None and not saved.exists("web")
    assert folders(saved.root()) == []
    monkeypatch.undo()
    monkeypatch.setenv("ANTRIEB_CACHE", str(cache.root))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(cache.root.parent / "recipes"))
    assert len(list((cache.root / ".trash").iterdir())) == 2
    cachedir.prune(total())  # the next prune finishes the deletions
    assert list((cache.root / ".trash").iterdir()) == []


def test_on_another_file_system_it_is_invalidated_before_the_rename(cache, monkeypatch):
    layer = cache.saved("web", cache.golden(cache.image(), "c" * 12), layer=True)
    real = evict.os.rename
    seen = []

    def cross_device(src, dst):
        if ".trash" in str(dst):
            raise OSError(18, "Invalid cross-device link")
        seen.append((saved.exists("web"), dst))
        return real(src, dst)

    monkeypatch.setattr(evict.os, "rename", cross_device)
    monkeypatch.setattr(evict.shutil, "rmtree", lambda p, ignore_errors=False: None)
    assert cachedir.prune(0)[0].path == layer
    assert seen[0][0] is False  # no manifest by the time the folder moves
    assert saved.list_saved() == []
    monkeypatch.undo()
    monkeypatch.setenv("ANTRIEB_CACHE", str(cache.root))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(cache.root.parent / "recipes"))
    cachedir.prune(total())
    assert folders(saved.root()) == []


def test_auto_prune_never_fails_the_caller(cache, monkeypatch, capsys):
    world(cache)
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", "garbage")
    assert cachedir.auto_prune() == []
    assert "pruning the cache failed" in capsys.readouterr().err

