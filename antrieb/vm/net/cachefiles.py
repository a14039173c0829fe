"""The apt proxy's files on disk: which paths never change, and each cached index's
metadata (``.<name>.meta``: ETag, Last-Modified, when it was last checked upstream,
and for a mirror that sends no Last-Modified, the date the proxy gave it)."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from email.utils import formatdate, parsedate_to_datetime
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


def dated_by_proxy(sha256: str, previous: dict[str, Any] | None) -> dict[str, Any]:
    """A Last-Modified for an index whose upstream sent none: the time the proxy first
    saw these bytes (kept while they stay the same). It is never later than a client's
    copy of the same bytes from this proxy, and a change is always dated after it."""
    previous = previous or {}
    before = previous.get("last_modified")
    if before and previous.get("sha256") == sha256:
        return {"sha256": sha256, "last_modified": before, "last_modified_by_proxy": True}
    now = time.time()
    if before:
        # HTTP dates are whole seconds: a change seen in the second of the last one
        # is dated a second later, or a client holding the old bytes would get a 304.
        with contextlib.suppress(ValueError):
            now = max(now, parsedate_to_datetime(before).timestamp() + 1)
    return {"sha256": sha256, "last_modified": formatdate(now, usegmt=True),
            "last_modified_by_proxy": True}


def not_modified_since(last_modified: str | None, if_modified_since: str | None) -> bool:
    """Whether a client's copy dated ``if_modified_since`` is as new as ours."""
    if not last_modified or not if_modified_since:
        return False
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
