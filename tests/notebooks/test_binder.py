"""binder/ stays consistent with the install step of ./dev and pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[str]:
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines()
            if ln.split("#")[0].strip()]


def test_requirements_are_the_notebook_extra() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["notebook"]
    assert sorted(_lines(ROOT / "binder" / "requirements.txt")) == sorted(extra)


def test_apt_packages_are_devs() -> None:
    body = re.search(r"APT_PACKAGES=\((.*?)\n\)", (ROOT / "dev").read_text(), re.S)
    assert body is not None
    dev = {w for ln in body.group(1).splitlines() for w in ln.split("#")[0].split()}
    binder = set(_lines(ROOT / "binder" / "apt.txt"))
    assert binder <= dev, binder - dev
    assert {"qemu-system-x86", "mmdebstrap"} <= binder


def test_postbuild_installs_the_package_like_dev() -> None:
    post = ROOT / "binder" / "postBuild"
    assert post.stat().st_mode & 0o111
    assert "pip install" in post.read_text() and "-e '.[notebook]'" in post.read_text()
