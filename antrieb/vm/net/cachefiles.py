"""The apt proxy's files on disk: which paths never change, and each cached index's
metadata (``.<name>.meta``: ETag, Last-Modified, when it was last checked upstream)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def is_immutable(rel: str) -> bool:
    """Packages and by-hash indexes: a path's content never changes."""
    return rel.startswith("pool/") or "/by-hash/" in f"/{rel}"


def read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
