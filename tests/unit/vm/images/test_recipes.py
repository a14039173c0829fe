"""Image recipes: validation, extends, content hash, the catalogue, manifests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from antrieb.errors import ConfigError, UnknownImageError
from antrieb.vm import images
from antrieb.vm.images import ImageArtifacts, catalogue, contents, get_recipe
from antrieb.vm.images import builder as build
from antrieb.vm.images.recipes import DEFAULT_DISK_SIZE

BASE = """\
name: base
description: a base
suite: bookworm
packages: [systemd-sysv, openssh-server, python3]
"""


def recipes(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def test_repository_catalogue():
    cat = catalogue()
    assert {"debian-12", "debian-13", "debian-12-ansible"} <= set(cat)
    assert cat["debian-12"].suite == "bookworm" and cat["debian-13"].suite == "trixie"
    ansible = cat["debian-12-ansible"]
    assert ansible.suite == "bookworm" and ansible.extends == "debian-12"
    assert "ansible-core" in ansible.packages
    for needed in ("python3", "iproute2", "openssh-server", "systemd-sysv"):
        assert needed in cat["debian-12"].packages and needed in ansible.packages
    assert len({r.content_hash() for r in cat.values()}) == len(cat)


def test_extends_merges_packages_and_inherits_suite(tmp_path):
    d = recipes(tmp_path, {"base": BASE, "child": """\
        extends: base
        packages: [nginx, python3]
        disk_size: 8G
        """})
    child = get_recipe("child", d)
    assert child.name == "child" and child.suite == "bookworm" and child.disk_size == "8G"
    assert child.packages == ("systemd-sysv", "openssh-server", "python3", "nginx")
    assert get_recipe("base", d).disk_size == DEFAULT_DISK_SIZE


def test_child_may_override_suite(tmp_path):
    d = recipes(tmp_path, {"base": BASE, "next": "extends: base\nsuite: trixie\n"})
    assert get_recipe("next", d).suite == "trixie"


@pytest.mark.parametrize("text,message", [
    ("suite: bookworm\ncolour: blue\n", "colour: unknown key"),
    ("suite: bookworm\npackages: curl\n", "packages"),
    ("suite: [bookworm]\n", "suite"),
    ("packages: [curl]\n", "has no suite"),
    ("suite: bookworm\npackages: [Curl_Thing]\n", "not Debian package names"),
    ("suite: bookworm\ndisk_size: lots\n", "disk_size"),
    ("suite: Bookworm\n", "not a Debian suite"),
    ("name: other\nsuite: bookworm\n", "differs from the file name"),
    ("suite: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("extends: nowhere\n", "extends unknown image 'nowhere'"),
    ("extends: bad\nsuite: bookworm\n", "cycle: bad -> bad"),
])
def test_invalid_recipes(tmp_path, text, message):
    d = recipes(tmp_path, {"bad": text})
    with pytest.raises(ConfigError, match=message) as info:
        catalogue(d)
    assert "bad" in str(info.value)


def test_extends_cycle_names_the_chain(tmp_path):
    d = recipes(tmp_path, {"a": "extends: b\nsuite: bookworm\n", "b": "extends: c\n",
                           "c": "extends: a\n"})
    with pytest.raises(ConfigError, match=r"cycle: a -> b -> c -> a"):
        catalogue(d)


def test_unknown_image_lists_known(tmp_path):
    d = recipes(tmp_path, {"base": BASE, "other": "extends: base\n"})
    with pytest.raises(UnknownImageError) as info:
        get_recipe("debian-99", d)
    assert info.value.known == ["base", "other"]
    assert "base, other" in str(info.value)


def test_missing_folder_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        catalogue(tmp_path / "nope")


def _hash(tmp_path: Path, text: str) -> str:
    d = tmp_path / str(abs(hash(text)))
    d.mkdir()
    return get_recipe("base", recipes(d, {"base": text})).content_hash()


def test_hash_follows_contents_not_cosmetics(tmp_path):
    h = _hash(tmp_path, BASE)
    assert h == _hash(tmp_path, BASE.replace("a base", "another description"))
    assert h == _hash(tmp_path, BASE.replace("[systemd-sysv, openssh-server, python3]",
                                             "[python3, systemd-sysv, openssh-server]"))
    assert h != _hash(tmp_path, BASE.replace("python3]", "python3, curl]"))
    assert h != _hash(tmp_path, BASE.replace("bookworm", "trixie"))
    assert h != _hash(tmp_path, BASE + "disk_size: 8G\n")


def test_hash_covers_parent_packages(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = recipes(tmp_path / "a", {"base": BASE, "child": "extends: base\n"})
    b = recipes(tmp_path / "b", {"base": BASE.replace("python3]", "python3, vim]"),
                                 "child": "extends: base\n"})
    assert get_recipe("child", a).content_hash() != get_recipe("child", b).content_hash()


def test_hash_changes_with_agent_file_and_build_version(tmp_path, monkeypatch):
    d = recipes(tmp_path, {"base": BASE})
    before = get_recipe("base", d).content_hash()
    agent = tmp_path / "agent.py"
    agent.write_bytes(contents.AGENT.read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(contents, "INPUT_FILES", (agent, *contents.INPUT_FILES[1:]))
    changed = get_recipe("base", d).content_hash()
    assert changed != before
    monkeypatch.setattr(contents, "BUILD_VERSION", contents.BUILD_VERSION + 1)
    assert get_recipe("base", d).content_hash() not in (before, changed)


def test_hash_inputs_are_the_shipped_files():
    names = {p.name for p in contents.INPUT_FILES}
    assert names == {"agent.py", "agentd.c", "antrieb-agent.service", "initramfs-init.sh"}
    assert all(p.is_file() for p in contents.INPUT_FILES)


def _artifacts(directory: Path) -> ImageArtifacts:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd.img", "disk.raw"):
        (directory / name).write_bytes(b"x")
    return ImageArtifacts(name="base", content_hash="ab" * 32, dir=directory,
                          kernel=directory / "vmlinuz", initrd=directory / "initrd.img",
                          disk=directory / "disk.raw", kernel_version="6.1.0-1-cloud-amd64",
                          suite="bookworm", built_at=1.0)


def test_manifest_round_trip_is_relative(tmp_path):
    art = _artifacts(tmp_path / "one")
    art.write_manifest()
    doc = json.loads((tmp_path / "one/manifest.json").read_text())
    assert doc["kernel"] == "vmlinuz" and "dir" not in doc
    moved = tmp_path / "moved"
    (tmp_path / "one").rename(moved)
    loaded = ImageArtifacts.load(moved)
    assert loaded is not None and loaded.disk == moved / "disk.raw"


def test_incomplete_artifacts_are_not_built(tmp_path):
    assert ImageArtifacts.load(tmp_path) is None  # no manifest
    art = _artifacts(tmp_path / "x")
    art.write_manifest()
    (tmp_path / "x/disk.raw").unlink()
    assert ImageArtifacts.load(tmp_path / "x") is None
    (tmp_path / "x/manifest.json").write_text("{not json")
    assert ImageArtifacts.load(tmp_path / "x") is None


def test_cached_image_is_returned_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(recipes(tmp_path, {"base": BASE})))
    recipe = get_recipe("base")
    art = _artifacts(images.artifact_dir(recipe))
    art.write_manifest()
    monkeypatch.setattr(build, "preflight", lambda: pytest.fail("must not build"))
    from antrieb import events
    seen: list = []
    with events.subscribed(seen.append):
        got = images.ensure("base")
    assert got.dir == images.artifact_dir(recipe)
    assert [(e.kind, e.cached) for e in seen] == [("image_built", True)]
    rows = images.list_images()
    assert rows[0]["name"] == "base" and rows[0]["built"] and rows[0]["size"] > 0


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(recipes(tmp_path, {"base": BASE})))
    monkeypatch.setattr(build, "preflight", lambda: None)

    def explode(recipe, digest, out):
        out.mkdir(parents=True)
        (out / "half.raw").write_bytes(b"half")
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "build_into", explode)
    with pytest.raises(RuntimeError, match="boom"):
        images.build("base")
    assert [p.name for p in images.images_root().iterdir() if not p.name.endswith(".lock")] == []


def test_prune_removes_other_hashes_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(recipes(tmp_path, {"base": BASE})))
    current = images.artifact_dir(get_recipe("base"))
    current.mkdir(parents=True)
    old = images.images_root() / "base-0123456789ab"
    gone = images.images_root() / "deleted-recipe-0123456789ab"
    old.mkdir()
    gone.mkdir()
    assert sorted(p.name for p in images.prune()) == sorted([old.name, gone.name])
    assert current.exists() and not old.exists() and not gone.exists()


def test_concurrent_builds_build_once(tmp_path, monkeypatch):
    import threading
    import time

    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTRIEB_IMAGES_DIR", str(recipes(tmp_path, {"base": BASE})))
    monkeypatch.setattr(build, "preflight", lambda: None)
    calls = []

    def fake_build(recipe, digest, out):
        calls.append(out)
        time.sleep(0.2)
        art = _artifacts(out)
        art.write_manifest()
        return art

    monkeypatch.setattr(build, "build_into", fake_build)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(images.ensure("base")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    assert len({r.dir for r in results}) == 1


def test_preflight_needs_root(monkeypatch):
    monkeypatch.setattr(build.os, "geteuid", lambda: 1000)
    with pytest.raises(build.MissingToolError, match="root"):
        build.preflight()


def test_preflight_names_the_package(monkeypatch):
    monkeypatch.setattr(build.os, "geteuid", lambda: 0)
    monkeypatch.setattr(build.hosttools, "find",
                        lambda tool: None if tool == "mkfs.ext4" else f"/usr/bin/{tool}")
    with pytest.raises(build.MissingToolError, match="apt-get install e2fsprogs"):
        build.preflight()


def test_sources_name_only_the_pseudo_host():
    recipe = images.Recipe(name="x", suite="trixie", packages=("python3",))
    b = build._Build(recipe, "0" * 64, Path("/nonexistent"))
    lines = b.sources({"debian": "http://mirror.example/debian",
                       "debian-security": "http://mirror.example/debian-security"})
    assert lines == ["deb http://apt.antrieb/debian trixie main",
                     "deb http://apt.antrieb/debian trixie-updates main",
                     "deb http://apt.antrieb/debian-security trixie-security main"]
    assert b.sources({"debian": "http://mirror.example/debian"}) == lines[:2]
    sid = build._Build(images.Recipe(name="x", suite="sid", packages=()), "0", Path("/x"))
    assert sid.sources({"debian": "http://m.example/debian"}) == [
        "deb http://apt.antrieb/debian sid main"]
