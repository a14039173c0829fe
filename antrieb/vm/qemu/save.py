"""Saving a running clone as a golden of its own (the QMP side, run by the supervisor).

A clone maps its golden's RAM privately (copy-on-write), so ``x-ignore-shared`` would
skip nothing and a plain migration of it restores only into anonymous RAM: every clone
of it would then carry a full private copy and load all of it. Instead the save makes
the same shape as a golden, so clones of a saved node restore exactly like any other:

1. the clone is paused; its disk changes (the throw-away qcow2 overlay on its golden's
   disk) are copied: a new overlay on the same golden disk (only what the clone wrote);
2. a *loader* QEMU starts with its RAM in a fresh shared file and receives the clone's
   full RAM and device state over a Unix socket;
3. the loader is continued and migrated again with ``x-ignore-shared``: its RAM stays
   in the shared file, the state file is small and records "running";
4. the loader is killed; the clone is continued and goes on as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FAST = 64 << 30  # bytes/s: QEMU's default migration cap (128 MiB/s) would dominate


def wait_for(what: str, probe: Callable[[], str | None], timeout: float,
             failed: Callable[[str], Exception]) -> None:
    """Poll ``probe`` until it returns "done"; any other non-None string is a failure."""
    deadline = time.monotonic() + timeout
    while True:
        status = probe()
        if status == "done":
            return
        if status is not None:
            raise failed(f"{what}: {status}")
        if time.monotonic() > deadline:
            raise failed(f"{what}: timed out after {timeout:.0f}s")
        time.sleep(0.02)


def migration_status(qmp: Any) -> str | None:
    info = qmp.cmd("query-migrate")
    status = info.get("status")
    if status == "completed":
        return "done"
    if status in ("failed", "cancelled"):
        return f"migration {status}: {info.get('error-desc', '')}"
    return None


def copy_disk(qmp: Any, pid: int, target: str, failed: Callable[[str], Exception]) -> None:
    """Copy the paused clone's throw-away overlay (what it wrote, on top of its golden's
    disk) to ``target`` and name that disk as its backing file. ``stop`` has flushed it.

    Not ``drive-backup``: on a ``snapshot=on`` drive it opens the backing file with the
    overlay's "temporary" flag and QEMU 7.2 then *deletes the golden's disk* on close
    (seen here)."""
    import shutil

    for dev in qmp.cmd("query-block"):
        if dev.get("device") == "d0" and dev.get("inserted"):
            source = dev["inserted"]["file"]
            break
    else:
        raise failed("no disk d0 on the node")
    if not source.startswith("json:"):
        raise failed(f"the node's disk is not a throw-away overlay: {source!r}")
    # snapshot=on: {"file": {"filename": overlay}, "backing": {"driver", "file": {...}}}
    tree = json.loads(source[5:])
    overlay = tree.get("file", {}).get("filename", "")
    backing = tree.get("backing", {})
    base, base_format = backing.get("file", {}).get("filename", ""), backing.get("driver")
    if not overlay.startswith("/") or not base.startswith("/") or not base_format:
        raise failed(f"cannot read the disk chain {source!r}")
    # QEMU unlinks a snapshot=on overlay once open: read it through QEMU's own fd
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).removesuffix(" (deleted)") == overlay:
                shutil.copyfile(fd, target)
                # the overlay was made without a backing file in its header (QEMU attached
                # it in memory): name it, or everything the clone did not write reads as 0
                subprocess.run(["qemu-img", "rebase", "-u", "-b", base, "-F", base_format,
                                target], check=True, capture_output=True)
                return
    raise failed(f"the disk overlay {overlay} is not open in QEMU (pid {pid})")


def full_migration(source: Any, loader: Any, sock: str,
                   failed: Callable[[str], Exception]) -> None:
    """Every page of the clone's RAM and its device state into the loader."""
    for qmp in (source, loader):
        # the clone inherited x-ignore-shared from its own restore: off, or nothing is sent
        qmp.cmd("migrate-set-capabilities",
                capabilities=[{"capability": "x-ignore-shared", "state": False}])
    loader.cmd("migrate-incoming", uri=f"unix:{sock}")
    source.cmd("migrate-set-parameters", **{"max-bandwidth": FAST})
    source.cmd("migrate", uri=f"unix:{sock}")
    wait_for("RAM transfer", lambda: migration_status(source), 300, failed)

    def loaded() -> str | None:
        status = loader.cmd("query-status")["status"]
        return None if status == "inmigrate" else "done" if status in (
            "paused", "postmigrate", "running") else f"loader is {status}"

    wait_for("RAM load", loaded, 120, failed)


def snapshot_running(loader: Any, state: str, failed: Callable[[str], Exception]) -> None:
    """The loader's device state, recorded as running (clones start by themselves)."""
    if loader.cmd("query-status")["status"] != "running":
        loader.cmd("cont")
    loader.cmd("migrate-set-capabilities",
               capabilities=[{"capability": "x-ignore-shared", "state": True}])
    loader.cmd("migrate", uri=f"exec:cat > {state}")
    wait_for("state snapshot", lambda: migration_status(loader), 120, failed)
