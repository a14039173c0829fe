"""The soak benchmark: many clusters up and down in a row, and what is left after.

It counts what a leak would grow, before the first cluster and after the last:

- ``processes``: this process's descendants (a supervisor or QEMU that outlived its
  cluster would still hang here), this process's threads (native ones too), and how
  many of the
  supervisor and QEMU processes the soak started are still alive anywhere;
- ``open_files``: file descriptors of this process (a paramiko transport, a control
  socket or a console file not closed per cluster adds one each time);
- ``namespaces``: how many of the soak's cluster network/mount namespaces a process of
  the soak still holds (the kernel reaps them once the last process inside exits; it
  reuses the numbers, so an ID seen again in another user's cluster is counted apart),
  and the host totals;
- ``disk``: bytes under the cache folder (and its ``runtime`` tmpfs mountpoint, which
  must stay empty), the temp folder and ``/dev/shm``.

Other users of the machine may start and stop clusters meanwhile: the host-wide
figures are printed for context, the ones traced to this soak are what must not grow.
Ready times are ``Cluster.up()`` wall times; p50/p95 of the first ten clusters are
compared with the last ten (a slow leak shows up as drift).

Example::

    antrieb bench soak --clusters 100 --json
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from antrieb import config
from antrieb.cluster import Cluster
from antrieb.errors import CommandFailed
from antrieb.vm.driver import get_driver
from antrieb.vm.procfs import stat_fields


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's ``children`` list)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below ``pid`` (default: this process)."""
    todo, seen = [pid or os.getpid()], []
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.append(child)
                todo.append(child)
    return seen


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone: it holds no resources but its pid)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def namespace_holders(kind: str) -> dict[str, set[int]]:
    """Every ``kind`` ('net', 'mnt') namespace on the host -> the processes in it."""
    found: dict[str, set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.setdefault(os.readlink(f"/proc/{entry}/ns/{kind}"), set()).add(int(entry))
            except OSError:
                continue
    return found


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def snapshot(started_pids: set[int], cluster_ns: set[str]) -> dict[str, Any]:
    """The counts a leak would grow (see the module docstring)."""
    cache = config.cache_dir()
    runtime = cache / "runtime"
    net, mnt = namespace_holders("net"), namespace_holders("mnt")
    ours = started_pids | set(descendants())
    # The kernel reuses a freed namespace's inode number: an ID of ours held by someone
    # else's new cluster is not ours any more. Ours leaks only if a process of ours holds it.
    holders = [net.get(ns, set()) | mnt.get(ns, set()) for ns in cluster_ns]
    return {
        "processes": {
            "descendants": len(descendants()),
            "threads": len(os.listdir("/proc/self/task")),
            "started_still_alive": sum(1 for p in started_pids if alive(p)),
        },
        "open_files": len(os.listdir("/proc/self/fd")),
        "namespaces": {
            "held_by_soak": sum(1 for h in holders if h & ours),
            "ids_reused_by_others": sum(1 for h in holders if h and not h & ours),
            "host_net": len(net),
            "host_mnt": len(mnt),
        },
        "disk": {
            "cache_bytes": tree_bytes(cache),
            "runtime_entries": len(os.listdir(runtime)) if runtime.exists() else 0,
            "tmp_bytes": tree_bytes(Path(tempfile.gettempdir())),
            "dev_shm_entries": len(os.listdir("/dev/shm")),
        },
    }


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): for 10 samples p95 is the largest."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(statistics.median(values), 3),
            "p95": round(_percentile(values, 95), 3)}


def _one_cluster(nodes: int, image: str, driver: str | None,
                 started: set[int], namespaces: set[str]) -> float:
    cluster = Cluster(nodes=nodes, image=image, driver=driver)
    t0 = time.monotonic()
    cluster.up()
    ready = time.monotonic() - t0
    try:
        drv = cluster.driver
        sup = drv.supervisor_pid()  # type: ignore[attr-defined]
        if sup:
            started.add(sup)
            for kind in ("net", "mnt"):
                namespaces.add(os.readlink(f"/proc/{sup}/ns/{kind}"))
        started.update(s["pid"] for s in drv.stats().values())
        # SSH into every node: transports and channels are what would leak descriptors
        results = cluster.run_all("true", timeout=60)
        for result in results.values():
            if not result.ok:
                raise CommandFailed(result)
    finally:
        cluster.down()
    return ready


def _settle(started: set[int], timeout: float = 5.0) -> None:
    """Wait for the processes a soak started to be gone (the kernel reaps asynchronously)
    and for worker threads to end (a stopped run does not wait for its workers)."""
    deadline = time.monotonic() + timeout

    def busy() -> bool:
        workers = [t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")]
        return any(alive(p) for p in started) or bool(workers)

    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)


def growth(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after - before for every count, same shape."""
    return {k: growth(v, after[k]) if isinstance(v, dict) else after[k] - v
            for k, v in before.items()}


def bench_soak(clusters: int = 100, nodes: int = 2, image: str = "debian-12",
               driver: str | None = None,
               progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Bring ``clusters`` clusters up and down in a row; counts before/after and ready times.

    ``no_growth`` is true when nothing traced to the soak is left (processes it started,
    its namespaces, descendants, the runtime folder) and this process holds no more open
    files or Python threads than before.
    """
    get_driver(driver).prepare({image})  # image + golden: built once, not part of a figure
    started: set[int] = set()
    namespaces: set[str] = set()
    # one warm-up cluster: lazy imports and first-use caches (paramiko, pydantic) would
    # otherwise count as growth of this process
    _one_cluster(nodes, image, driver, started, namespaces)
    _settle(started)
    threads_before = threading.active_count()
    before = snapshot(started, namespaces)
    ready: list[float] = []
    load: list[float] = []  # the host's 1-minute load: shared machines drift
    t0 = time.monotonic()
    for i in range(clusters):
        ready.append(_one_cluster(nodes, image, driver, started, namespaces))
        load.append(os.getloadavg()[0])
        if progress:
            progress(i + 1, ready[-1])
    total = time.monotonic() - t0
    _settle(started)
    after = snapshot(started, namespaces)
    delta = growth(before, after)
    first, last = ready[:10], ready[-10:]
    traced = (after["processes"]["started_still_alive"] == 0
              and after["namespaces"]["held_by_soak"] == 0
              and delta["processes"]["descendants"] <= 0
              and threading.active_count() <= threads_before
              and delta["open_files"] <= 0
              and after["disk"]["runtime_entries"] == 0)
    p95_ratio = _stats(last)["p95"] / max(_stats(first)["p95"], 1e-9)
    return {
        "clusters": clusters,
        "nodes": nodes,
        "image": image,
        "seconds": round(total, 1),
        "processes_started": len(started),
        "namespaces_made": len(namespaces),
        "before": before,
        "after": after,
        "growth": delta,
        "python_threads": {"before": threads_before, "after": threading.active_count()},
        "ready_s": {"first10": _stats(first), "last10": _stats(last),
                    "all": _stats(ready), "p95_last_vs_first": round(p95_ratio, 3),
                    "host_load1_first10": round(statistics.mean(load[:10]), 2),
                    "host_load1_last10": round(statistics.mean(load[-10:]), 2)},
        "no_growth": traced,
        "ready_ok": p95_ratio <= 1.5,
    }
