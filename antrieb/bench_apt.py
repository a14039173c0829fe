"""Where package installation spends its time inside a guest, measured with ``strace``.

``antrieb bench apt-phases --packages nginx`` boots one node from the pristine golden,
installs ``strace`` (from the same mirror), then runs ``apt-get update`` on empty lists
(as the image has apt, then with the guest tuning) and ``apt-get install -y PACKAGES``
under ``strace -f -ttt`` (only ``execve`` and the
``fsync`` family are traced, through seccomp-bpf, so untraced calls run at full speed).

Every moment of a command's wall time is attributed to the innermost process running
then (the one started last among those alive), and that process to a phase by what it
runs (its own program, else the phase of its parent): apt's own work (start-up, solver,
reading and writing its caches), downloads and signature checks, decompression,
debconf, dpkg's own work (unpacking, bookkeeping), maintainer scripts, systemd calls
from them, and triggers. The fsync calls and the seconds spent in them are counted
apart: they show whether an I/O setting could matter.

Example::

    antrieb bench apt-phases --packages nginx --json
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

PHASES = ("apt", "download+verify", "decompress", "debconf", "dpkg", "maintainer scripts",
          "systemd", "triggers")
_SYSTEMD = {"systemctl", "deb-systemd-helper", "deb-systemd-invoke", "invoke-rc.d",
            "update-rc.d", "systemd-sysusers", "systemd-tmpfiles"}
_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+) (.*)$")
_EXEC = re.compile(r'^execve\("([^"]+)", \[(.*?)\]')
_SECONDS = re.compile(r"<([\d.]+)>$")


@dataclass
class Proc:
    pid: int
    start: float
    end: float
    program: str = ""
    args: str = ""
    parent: int | None = None
    fsyncs: int = 0
    fsync_s: float = 0.0
    children: list[int] = field(default_factory=list)


def _own_phase(p: Proc) -> str | None:
    base = os.path.basename(p.program)
    if "triggered" in p.args or "--triggers-only" in p.args or base in {"ldconfig", "mandb"}:
        return "triggers"
    if base in _SYSTEMD:
        return "systemd"
    if p.program.startswith("/var/lib/dpkg/info/") or (
            base == "frontend" and "/var/lib/dpkg/info/" in p.args):
        return "maintainer scripts"
    if base in {"dpkg-preconfigure", "apt-extracttemplates"}:
        return "debconf"
    if base.startswith("dpkg"):
        return "dpkg"
    if base == "store":
        return "decompress"
    if p.program.startswith("/usr/lib/apt/methods/") or base in {"apt-key", "gpgv", "gpg",
                                                               "gpgconf"}:
        return "download+verify"
    if base in {"apt-get", "apt"}:
        return "apt"
    return None


def parse_trace(text: str) -> dict[int, Proc]:
    """The processes of an ``strace -f -ttt -T`` log: lifetimes, programs, parents, fsyncs."""
    procs: dict[int, Proc] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid, t, rest = int(m[1]), float(m[2]), m[3]
        p = procs.setdefault(pid, Proc(pid, t, t))
        p.end = max(p.end, t)
        ex = _EXEC.match(rest)
        if ex and "ENOENT" not in rest:
            p.program, p.args, p.start = ex[1], ex[2][:300], min(p.start, t)
        elif rest.startswith(("fsync(", "fdatasync(", "sync_file_range(")):
            p.fsyncs += 1
            s = _SECONDS.search(rest)
            p.fsync_s += float(s[1]) if s else 0.0
        elif "SIGCHLD" in rest:
            c = re.search(r"si_pid=(\d+)", rest)
            if c:
                child = procs.setdefault(int(c[1]), Proc(int(c[1]), t, t))
                child.end, child.parent = max(child.end, t), pid
    for p in procs.values():
        if p.parent in procs:
            procs[p.parent].children.append(p.pid)
    return procs


def phase_seconds(procs: dict[int, Proc]) -> dict[str, float]:
    """Seconds per phase: each instant goes to the innermost (latest-started) live process."""
    def phase(p: Proc) -> str:
        seen = set()
        while p is not None and p.pid not in seen:
            seen.add(p.pid)
            own = _own_phase(p)
            if own:
                return own
            p = procs.get(p.parent) if p.parent is not None else None  # type: ignore[assignment]
        return "apt"

    phases = {p.pid: phase(p) for p in procs.values()}
    cuts = sorted({t for p in procs.values() for t in (p.start, p.end)})
    out = dict.fromkeys(PHASES, 0.0)
    for a, b in itertools.pairwise(cuts):
        live = [p for p in procs.values() if p.start <= a and p.end >= b]
        if live:
            inner = max(live, key=lambda p: p.start)
            out[phases[inner.pid]] += b - a
    return out


def _traced(command: str, trace: str) -> str:
    return (f"DEBIAN_FRONTEND=noninteractive strace -f -ttt -T -qq --seccomp-bpf "
            f"-e trace=execve,fsync,fdatasync,sync_file_range -o {trace} {command}")


def measure(node: Any, command: str, trace: str = "/root/apt.trace") -> dict[str, Any]:
    """Run ``command`` under strace on ``node``; its wall, phases and fsyncs."""
    t0 = time.monotonic()
    r = node.run(_traced(command, trace), timeout=1800)
    wall = time.monotonic() - t0
    if r.exit_status != 0:
        raise RuntimeError(f"{command!r} failed ({r.exit_status}): {r.stderr[-500:]}")
    procs = parse_trace(node.get(trace).decode(errors="replace"))
    return {"wall_s": round(wall, 2), "processes": len(procs),
            "phases_s": {k: round(v, 2) for k, v in phase_seconds(procs).items()},
            "fsyncs": sum(p.fsyncs for p in procs.values()),
            "fsync_s": round(sum(p.fsync_s for p in procs.values()), 2)}


def bench_apt_phases(packages: list[str], image: str = "debian-12") -> dict[str, Any]:
    """One pristine node: the phases of ``apt-get update`` on empty lists as the image
    has apt, then again with the guest tuning (gzip lists), then of installing
    ``packages``; then the walls of ``apt-get update`` with the lists in place, three
    times, and three times with their dates reset so every index is fetched again."""
    from antrieb.cluster import Cluster
    from antrieb.converge.apply import APT_SPEED, APT_SPEED_CONF

    empty = "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
    with Cluster(nodes=[{"name": "apt", "image": image}]) as cluster:
        node = cluster["apt"]
        node.run("DEBIAN_FRONTEND=noninteractive apt-get update -q && "
                 f"apt-get install -y -q strace && {empty}", timeout=1800, check=True)
        update = measure(node, "apt-get update -q")
        node.run(f"{empty}; printf %s {shlex.quote(APT_SPEED)} > {APT_SPEED_CONF}",
                 check=True)
        tuned = measure(node, "apt-get update -q")
        install = measure(node, "apt-get install -y -q " + " ".join(map(shlex.quote, packages)))
        # A re-run (the proof's idempotence run, an iteration on a package layer) finds
        # the lists in place. Side by side, without strace (it inflates apt-key's many
        # short processes): as the proxy answers it (304, "Hit"), and with the lists'
        # dates reset so every index is fetched again ("Get"), as each re-run was while
        # the proxy sent no date. The reset ones last: apt keeps an unchanged file's date.
        again = _walls(node, "apt-get update -q", "Hit:")
        refetched = _walls(node, "touch -d @0 /var/lib/apt/lists/*Release; apt-get update -q",
                           "Get:")
    return {"image": image, "packages": packages, "accel": cluster.driver.accel,
            "update": update, "update_tuned": tuned,
            "update_tuned_over_update": round(tuned["wall_s"] / update["wall_s"], 3),
            "install": install, "update_again_s": again, "update_again_refetched_s": refetched,
            "update_again_over_refetched": round(sum(again) / sum(refetched), 3)}


def _walls(node: Any, command: str, expect: str, rounds: int = 3) -> list[float]:
    """The wall of ``command`` ``rounds`` times; each output must show ``expect``."""
    walls = []
    for _ in range(rounds):
        t0 = time.monotonic()
        r = node.run(command, timeout=1800)
        walls.append(round(time.monotonic() - t0, 2))
        if r.exit_status != 0 or expect not in r.stdout:
            raise RuntimeError(f"{command!r} ({r.exit_status}) did not show {expect!r}: "
                               f"{(r.stdout + r.stderr)[-500:]}")
    return walls
