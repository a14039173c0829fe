"""A process's facts from ``/proc/PID/stat``, parsed in one place: the command name in
parentheses may itself hold spaces and parentheses, so fields are counted after the last
``)``."""

from __future__ import annotations

from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name (index 0 is the state, field 3 in proc(5)), or
    None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
