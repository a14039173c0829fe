"""Image recipes (``images/*.yaml``): a Debian suite and packages, optionally extending
another recipe. :meth:`Recipe.content_hash` covers everything that goes into the image,
so the built artefacts are cached by it and rebuilt only when something changed
(:mod:`antrieb.vm.images.cache`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from antrieb import config
from antrieb.errors import ConfigError, UnknownImageError
from antrieb.vm.images import contents

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
        h = hashlib.sha256()
        doc = {"build_version": contents.BUILD_VERSION, "suite": self.suite,
               "packages": sorted(set(self.packages)), "disk_size": self.disk_size}
        h.update(json.dumps(doc, sort_keys=True).encode())
        for path in contents.INPUT_FILES:
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
