"""Where antrieb keeps things, and the settings read from the environment.

Every setting has a sane default; the environment overrides it:

- ``ANTRIEB_CACHE``: built images, golden snapshots, the package cache
  (default ``$XDG_CACHE_HOME/antrieb`` or ``~/.cache/antrieb``).
- ``ANTRIEB_CACHE_MAX``: how big the cache may grow (``20G``; see
  :mod:`antrieb.vm.cachedir`).
- ``ANTRIEB_IMAGES_DIR``: image recipes (default: the repository's ``images/``).
- ``ANTRIEB_ACCEL``: ``kvm`` or ``tcg`` to skip the accelerator probe.
- ``ANTRIEB_DRIVER``: the VM driver (default ``qemu``).
- ``ANTRIEB_LAYERS``: ``0`` starts every attempt from the pristine golden (no package
  layers; default on).
- ``ANTRIEB_GUEST_TUNING``: ``0`` leaves apt's settings in the guest as the image has
  them (default on: faster index downloads, same result).
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_NODES = 4
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The root of everything antrieb caches; created on first use."""
    env = os.environ.get("ANTRIEB_CACHE")
    if env:
        path = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "antrieb"
    path.mkdir(parents=True, exist_ok=True)
    return path


def images_dir() -> Path:
    """The folder of image recipes (``*.yaml``)."""
    env = os.environ.get("ANTRIEB_IMAGES_DIR")
    return Path(env) if env else REPO_ROOT / "images"


def flag(name: str, default: bool = True) -> bool:
    """An on/off ``ANTRIEB_<NAME>`` setting: ``0``, ``no``, ``off``, ``false`` turn it off."""
    value = setting(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in {"0", "no", "off", "false"}


def setting(name: str, default: str | None = None) -> str | None:
    """An ``ANTRIEB_<NAME>`` environment setting, or the default."""
    return os.environ.get(f"ANTRIEB_{name.upper()}", default)
