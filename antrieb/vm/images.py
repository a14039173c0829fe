"""Image recipes (``images/*.yaml``) and the cached artefacts built from them.

A recipe names a Debian suite and packages, optionally extending another recipe.
Its :meth:`Recipe.content_hash` covers everything that goes into the image, so the
artefacts (kernel, initramfs, raw ext4 disk) are cached under
``cache_dir()/images/<name>-<hash[:12]>/`` and rebuilt only when something changed.

Example::

    from antrieb.vm import images
    art = images.ensure("debian-12")     # builds once (minutes), then returns at once
    art.kernel, art.initrd, art.disk
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from antrieb import config, events
from antrieb.errors import ConfigError, UnknownImageError

DEFAULT_DISK_SIZE = "4G"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SUITE_RE = re.compile(r"^[a-z]+$")
_SIZE_RE = re.compile(r"^[1-9][0-9]*[MG]$")


class _RecipeFile(BaseModel):
    """One YAML file as written; ``suite`` may come from the recipe it extends."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    suite: str | None = None
    packages: list[str] = Field(default_factory=list)
    extends: str | None = None
    disk_size: str | None = None

    @field_validator("name", "extends")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid image name (lowercase, digits, '.', '-')")
        return v

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str | None) -> str | None:
        if v is not None and not _SUITE_RE.match(v):
            raise ValueError(f"{v!r} is not a Debian suite name such as bookworm or trixie")
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not _PACKAGE_RE.match(p)]
        if bad:
            raise ValueError(f"not Debian package names: {bad}")
        return v

    @field_validator("disk_size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not _SIZE_RE.match(v):
            raise ValueError(f"{v!r} is not a size like 4G or 2048M")
        return v


class Recipe(BaseModel):
    """A resolved image recipe: ``extends`` followed, packages merged, suite inherited."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    suite: str
    packages: tuple[str, ...]
    extends: str | None = None
    disk_size: str = DEFAULT_DISK_SIZE
    source: Path | None = None

    def content_hash(self) -> str:
        """sha256 over what the image is made of: the resolved recipe, the files copied into
        the image and the initramfs, and the build logic's version."""
        from antrieb.vm import build  # build imports this module

        h = hashlib.sha256()
        doc = {"build_version": build.BUILD_VERSION, "suite": self.suite,
               "packages": sorted(set(self.packages)), "disk_size": self.disk_size}
        h.update(json.dumps(doc, sort_keys=True).encode())
        for path in build.INPUT_FILES:
            data = path.read_bytes()
            h.update(f"\0{path.name}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()


def _format_validation(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "recipe"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return f"image recipe {path}: " + "; ".join(parts)


def load_recipe_file(path: Path) -> _RecipeFile:
    """Parse and validate one recipe file; the name defaults to the file's stem."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"image recipe {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"image recipe {path}: expected a mapping of keys, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        raw = _RecipeFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(path, exc)) from None
    if raw.name != path.stem:
        raise ConfigError(f"image recipe {path}: name {raw.name!r} differs from the file name")
    return raw


def resolve(raws: dict[str, _RecipeFile], name: str,
            sources: dict[str, Path] | None = None) -> Recipe:
    """Follow ``extends`` from ``name``: packages merged (parents first), suite and disk
    size inherited unless set. Cycles and unknown parents are a :class:`ConfigError`."""
    chain: list[_RecipeFile] = []
    current: str | None = name
    while current is not None:
        if any(r.name == current for r in chain):
            cycle = " -> ".join([*(r.name for r in chain), current])
            raise ConfigError(f"image recipes extend each other in a cycle: {cycle}")
        if current not in raws:
            raise ConfigError(f"image recipe {chain[-1].name!r} extends unknown image {current!r}; "
                              f"known: {', '.join(sorted(raws))}")
        chain.append(raws[current])
        current = raws[current].extends
    packages: list[str] = []
    suite = disk_size = None
    for raw in reversed(chain):  # the root ancestor first
        packages += [p for p in raw.packages if p not in packages]
        suite = raw.suite or suite
        disk_size = raw.disk_size or disk_size
    if suite is None:
        raise ConfigError(f"image recipe {name!r} has no suite (set suite: bookworm, trixie, ... "
                          "or extend a recipe that has one)")
    top = chain[0]
    return Recipe(name=top.name, description=top.description, suite=suite,
                  packages=tuple(packages), extends=top.extends,
                  disk_size=disk_size or DEFAULT_DISK_SIZE,
                  source=(sources or {}).get(name))


def catalogue(directory: Path | None = None) -> dict[str, Recipe]:
    """Every recipe in ``directory`` (default :func:`antrieb.config.images_dir`), resolved."""
    directory = directory or config.images_dir()
    if not directory.is_dir():
        raise ConfigError(f"image recipe folder {directory} does not exist (ANTRIEB_IMAGES_DIR)")
    raws: dict[str, _RecipeFile] = {}
    sources: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        raw = load_recipe_file(path)
        if raw.name in raws:
            raise ConfigError(f"image {raw.name!r} is defined twice: {sources[raw.name]}, {path}")
        raws[raw.name], sources[raw.name] = raw, path
    return {name: resolve(raws, name, sources) for name in sorted(raws)}


def get_recipe(name: str, directory: Path | None = None) -> Recipe:
    """The resolved recipe ``name``; :class:`UnknownImageError` lists the known ones."""
    recipes = catalogue(directory)
    if name not in recipes:
        raise UnknownImageError(name, sorted(recipes))
    return recipes[name]


# -- artefacts ---------------------------------------------------------------------------


class ImageArtifacts(BaseModel):
    """A built image: what a VM driver needs to boot it. Stored as ``manifest.json``."""

    name: str
    content_hash: str
    dir: Path
    kernel: Path
    initrd: Path
    disk: Path
    kernel_version: str
    suite: str
    packages: list[str] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)
    built_at: float
    build_seconds: float = 0.0

    def write_manifest(self) -> Path:
        """Write ``manifest.json`` (paths relative to the artefact dir) atomically."""
        doc = self.model_dump(mode="json", exclude={"dir"})
        for key in ("kernel", "initrd", "disk"):
            doc[key] = getattr(self, key).name
        path = self.dir / "manifest.json"
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> ImageArtifacts | None:
        """The artefacts in ``directory``, or None unless the manifest and files are complete."""
        try:
            doc = json.loads((directory / "manifest.json").read_text())
            doc["dir"] = directory
            for key in ("kernel", "initrd", "disk"):
                doc[key] = directory / doc[key]
            art = cls.model_validate(doc)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all(p.is_file() for p in (art.kernel, art.initrd, art.disk)):
            return None
        return art


def images_root() -> Path:
    """Where built images live: ``cache_dir()/images``."""
    root = config.cache_dir() / "images"
    root.mkdir(parents=True, exist_ok=True)
    return root


def artifact_dir(recipe: Recipe) -> Path:
    return images_root() / f"{recipe.name}-{recipe.content_hash()[:12]}"


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
    from antrieb.vm import build as builder

    recipe = get_recipe(name)
    digest = recipe.content_hash()
    final = images_root() / f"{name}-{digest[:12]}"
    started = time.monotonic()
    with _locked(images_root() / f".{final.name}.lock", name):
        if not force:
            art = ImageArtifacts.load(final)
            if art is not None:
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
    events.emit(events.ImageBuilt(image=name, content_hash=digest,
                                  seconds=time.monotonic() - started, cached=False))
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
    from antrieb.vm import build as builder

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
