"""Facts about processes from ``/proc``, read in one place. In ``/proc/PID/stat`` the
command name in parentheses may itself hold spaces and parentheses, so fields are counted
after the last ``)``."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name (index 0 is the state, field 3 in proc(5)), or
    None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pids_in_namespace(kind: str, ns: str) -> list[int]:
    """Every process whose ``/proc/PID/ns/<kind>`` link reads ``ns`` (e.g.
    ``net:[4026532281]``)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/{kind}") == ns:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def memory_rollup(pid: int | None) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in bytes per field (``Rss``, ``Private_Dirty``, ...);
    empty if the process is gone or the file cannot be read."""
    rollup: dict[str, int] = {}
    if pid is None:
        return rollup
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return rollup
    for line in lines:
        key, _, rest = line.partition(":")
        rollup[key.strip()] = int(rest.split()[0]) * 1024
    return rollup


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, or None if it is gone."""
    fields = stat_fields(pid)
    if not fields:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(under: str | os.PathLike[str]) -> set[str]:
    """Every file below ``under`` that some process we may look at holds open (its
    ``/proc/PID/fd`` links; a deleted file keeps its old path). A VM's QEMU holds its
    disk chain and RAM file open for as long as it runs."""
    prefix = os.path.realpath(under).rstrip("/") + "/"
    found: set[str] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fds = f"/proc/{entry.name}/fd"
        try:
            names = os.listdir(fds)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in names:
            try:
                target = os.readlink(f"{fds}/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.add(target.removesuffix(" (deleted)"))
    return found
