"""What is in the cache: kinds, real sizes, last use, what needs what, what is in use."""

from __future__ import annotations

import time

from antrieb.vm import cachedir
from antrieb.vm.cachedir.scan import qcow2_backing
from tests.unit.vm.cachedir.fake import BLOCK, qcow2


def by_key(found: list[cachedir.Entry]) -> dict[str, cachedir.Entry]:
    return {e.key: e for e in found}


def test_kinds_sizes_and_what_needs_what(cache):
    image = cache.image(size=8 * BLOCK)
    golden = cache.golden(image, "a" * 12)
    cache.saved("web", golden, layer=True)
    cache.saved("mine", golden)
    (cache.root / "apt-cache" / "debian").mkdir(parents=True)
    (cache.root / "apt-cache" / "debian" / "x.deb").write_bytes(b"p" * BLOCK)
    for record in ("runs", "experiments"):
        (cache.root / record).mkdir()
    (cache.root / "store.sqlite").write_bytes(b"s")

    found = by_key(cachedir.entries())
    img, gold = f"images/{image.name}", f"golden/{golden.name}"
    assert set(found) == {img, gold, "saved/web", "saved/mine", "apt-cache"}
    assert [found[k].kind for k in (img, gold, "saved/web", "saved/mine", "apt-cache")] == [
        "image", "golden", "layer", "saved", "apt-cache"]
    assert found[img].bytes >= 10 * BLOCK  # disk + kernel + initrd, counted by blocks
    assert found[gold].needs == (img,)
    assert found["saved/web"].needs == (gold, img)  # its disk's backing file, its kernel
    assert found["saved/web"].prunable
    # a saved user image is user data, and what it needs is kept with it
    assert not found["saved/mine"].prunable and found["saved/mine"].why == "user data"
    assert not found[gold].prunable and found[gold].why == "saved/mine needs it"
    assert not found[img].prunable and found[img].why == "saved/mine needs it"
    assert not found["apt-cache"].prunable


def test_sizes_count_blocks_not_length(cache):
    image = cache.image()
    sparse = image / "disk.raw"
    with sparse.open("r+b") as f:
        f.truncate(1 << 30)  # 1 GiB long, a few blocks used
    (entry,) = cachedir.entries()
    assert entry.bytes < 1 << 20


def test_last_used_is_the_marker_else_the_newest_file(cache):
    image = cache.image(used=5000)
    (entry,) = cachedir.entries()
    assert abs(entry.last_used - (time.time() - 5000)) < 5
    (image / ".last_used").unlink()
    (image / "disk.raw").touch()
    (entry,) = cachedir.entries()
    assert abs(entry.last_used - time.time()) < 5
    cachedir.mark_used(image)
    assert (image / ".last_used").stat().st_mtime > time.time() - 5


def test_outdated_builds_and_snapshots(cache):
    old = cache.image("0123456789ab")
    on_old = cache.golden(old, "b" * 12)
    cur = cache.image()
    older = cache.golden(cur, "c" * 12, created=100.0)
    newer = cache.golden(cur, "d" * 12, created=200.0)
    other_driver = cache.golden(cur, "e" * 12, created=50.0, driver="libvirt")
    found = by_key(cachedir.entries())
    assert found[f"images/{old.name}"].why == "its recipe changed"
    assert found[f"golden/{on_old.name}"].why == "its image's recipe changed"
    assert found[f"golden/{older.name}"].outdated
    assert "newer snapshot" in found[f"golden/{older.name}"].why
    assert not found[f"golden/{newer.name}"].outdated
    assert not found[f"golden/{other_driver.name}"].outdated  # the other driver's own
    assert not found[f"images/{cur.name}"].outdated


def test_unfinished_entries_are_outdated_and_a_golden_without_its_image_broken(cache):
    cur = cache.image()
    golden = cache.golden(cur, "a" * 12)
    (cache.root / "golden" / "base-ffffffffffff").mkdir()  # a golden killed while made
    (cache.root / "saved" / "half").mkdir(parents=True)  # a save without its manifest
    cache.used(cache.root / "saved" / "half", 7200)
    cache.used(cache.root / "golden" / "base-ffffffffffff", 7200)
    (cur / "manifest.json").unlink()
    found = by_key(cachedir.entries())
    assert found["golden/base-ffffffffffff"].why == "incomplete snapshot"
    assert found["saved/half"].kind == "layer" and found["saved/half"].outdated
    assert found[f"images/{cur.name}"].why == "incomplete build"
    (cur.parent / cur.name).rename(cur.parent / "elsewhere")
    found = by_key(cachedir.entries())
    assert found[f"golden/{golden.name}"].why == f"broken: images/{cur.name} is gone"


def test_in_use_open_locked_or_just_used(cache):
    image = cache.image()
    golden = cache.golden(image, "a" * 12)
    layer = cache.saved("web", golden, layer=True)
    assert not any(e.in_use for e in cachedir.entries())
    with (golden / "mem").open("rb"):  # as a clone's QEMU holds its golden's RAM file
        found = by_key(cachedir.entries())
        assert found[f"golden/{golden.name}"].in_use
        assert found[f"golden/{golden.name}"].why == "open in a running process"
    with cachedir.locked(layer):
        assert by_key(cachedir.entries())["saved/web"].why.startswith("locked")
    cachedir.mark_used(image)
    assert by_key(cachedir.entries())[f"images/{image.name}"].in_use


def test_qcow2_backing_reads_the_header(tmp_path):
    qcow2(tmp_path / "a.qcow2", tmp_path / "base.raw")
    assert qcow2_backing(tmp_path / "a.qcow2") == tmp_path / "base.raw"
    (tmp_path / "rel.qcow2").write_bytes(b"QFI\xfb" + bytes(4) + (512).to_bytes(8, "big")
                                         + (8).to_bytes(4, "big") + bytes(492) + b"base.raw")
    assert qcow2_backing(tmp_path / "rel.qcow2") == tmp_path / "base.raw"
    (tmp_path / "raw").write_bytes(b"\0" * 1024)
    assert qcow2_backing(tmp_path / "raw") is None
    assert qcow2_backing(tmp_path / "missing") is None
