"""Fault injection for the apt proxy: answer errors on purpose, to test what a run does
when the package mirror fails (class ``infrastructure``: the same code runs again).

``ANTRIEB_APT_FAULT=/path/file`` arms it; the file holds ``STATUS COUNT`` (e.g.
``502 3``): the next COUNT requests (over every cluster and process sharing the file)
are answered with STATUS instead of being served. No file, or COUNT 0: no fault.

Example::

    Path("/tmp/fault").write_text("502 5")
    os.environ["ANTRIEB_APT_FAULT"] = "/tmp/fault"   # before the cluster starts
"""

from __future__ import annotations

import fcntl
import os

ENV = "ANTRIEB_APT_FAULT"


def take() -> int | None:
    """The status to answer this request with, or None to serve it normally."""
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # several proxies may share one budget
        status, count = [*os.read(fd, 64).decode().split(), "0", "0"][:2]
        if not (status.isdigit() and count.isdigit()) or int(count) <= 0:
            return None
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{status} {int(count) - 1}\n".encode())
        return int(status)
    finally:
        os.close(fd)
