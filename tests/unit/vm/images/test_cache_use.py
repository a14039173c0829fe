"""The image cache tells the managed cache (:mod:`antrieb.vm.cachedir`) when a build is
used, and prunes it after a new build."""

from __future__ import annotations

import shutil

from antrieb.vm.images import ImageArtifacts
from antrieb.vm.images import builder as build
from antrieb.vm.images import cache as image_cache


def test_an_image_found_is_marked_and_a_new_build_prunes(cache, monkeypatch):
    cur = cache.image(used=5000)
    old = cache.image("0123456789ab", used=5000)
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", "0")
    image_cache.ensure("base")
    assert (cur / ".last_used").stat().st_mtime > old.stat().st_mtime + 4000
    assert old.exists()  # found, not built: no prune

    def fake_build(recipe, digest, out):
        shutil.copytree(cur, out)
        return ImageArtifacts.load(out)

    monkeypatch.setattr(build, "preflight", lambda: None)
    monkeypatch.setattr(build, "build_into", fake_build)
    image_cache.build("base", force=True)
    assert not old.exists() and cur.exists()  # the new build is in use: it stays
