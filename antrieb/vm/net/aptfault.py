"""Fault injection for the apt proxy: answer errors on purpose, to test what a run does
when the package mirror fails (class ``infrastructure``: the same code runs again).

``ANTRIEB_APT_FAULT=/path/file`` arms it; the file holds ``STATUS COUNT [PART]`` (e.g.
``502 3`` or ``502 4 /pool/``): the next COUNT requests (over every cluster and process
sharing the file) whose path contains PART (any path without it) are answered with
STATUS instead of being served. No file, or COUNT 0: no fault.

Example::

    Path("/tmp/fault").write_text("502 5")
    os.environ["ANTRIEB_APT_FAULT"] = "/tmp/fault"   # before the cluster starts
"""

from __future__ import annotations

import fcntl
import os

ENV = "ANTRIEB_APT_FAULT"


def take(target: str = "") -> int | None:
    """The status to answer the request for ``target`` with, or None to serve it."""
    armed = os.environ.get(ENV)
    if not armed:
        return None
    try:
        fd = os.open(armed, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # several proxies may share one budget
        fields = os.read(fd, 512).decode().split()
        status, count = [*fields, "0", "0"][:2]
        part = fields[2] if len(fields) > 2 else ""
        if not (status.isdigit() and count.isdigit()) or int(count) <= 0 or part not in target:
            return None
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, " ".join([status, str(int(count) - 1), part]).strip().encode() + b"\n")
        return int(status)
    finally:
        os.close(fd)
