"""Benchmarks that print figures: measured side by side in one run, never asserted."""

from __future__ import annotations

import statistics
import time
from typing import Any

from antrieb.cluster import Cluster
from antrieb.vm.driver import get_driver


def _cluster_round(nodes: int, image: str, driver: str | None, memory: int) -> dict[str, Any]:
    cluster = Cluster(nodes=nodes, image=image, driver=get_driver(driver, mem_mb=memory),
                      memory=memory)
    t0 = time.monotonic()
    cluster.up()
    ready = time.monotonic() - t0
    try:
        stats = cluster.driver.stats()
        results = cluster.run_all("true", timeout=60)
        if not all(r.ok for r in results.values()):
            raise RuntimeError(f"a node did not run `true`: {results}")
    finally:
        t1 = time.monotonic()
        cluster.down()
        teardown = time.monotonic() - t1
    return {
        "ready": ready,
        "teardown": teardown,
        "clone_ready": [cluster.timings["nodes"][p.name]["ssh"] for p in cluster.plans],
        # None where /proc/<pid>/smaps_rollup could not be read (the supervisor leaves the
        # figures empty then): an unread figure is not 0.0, the best possible ratio
        "mem": {name: (s["memory"]["Anonymous"] / (s["mem_mb"] * 2**20)
                       if "Anonymous" in (s.get("memory") or {}) else None)
                for name, s in stats.items()},
        "accel": cluster.driver.accel,
        "accel_reason": cluster.driver.accel_reason,
        "driver": cluster.driver.name,
    }


def bench_cluster(nodes: int = 4, image: str = "debian-12", driver: str | None = None,
                  memory: int = 512, rounds: int = 3) -> dict[str, Any]:
    """Cold boots vs. clusters from the golden snapshot, alternating, ``rounds`` times.

    ``cold_boot_s``: a fresh VM from launch to sshd answering. ``clone_ready_s``: per
    node, from restore start to identity applied and sshd answering. ``cluster_ready_s``:
    the whole ``Cluster.up()`` with artefacts cached (supervisor, network, all clones).
    ``private_mem_ratio``: the largest clone's own (anonymous) memory / its guest RAM.
    Shared machines are noisy: each figure is the median over the rounds, and the
    per-round values are printed too.
    """
    drv = get_driver(driver, mem_mb=memory)
    drv.prepare({image})  # builds or loads image and golden: not part of any figure
    colds, runs = [], []
    for _ in range(rounds):
        colds.append(drv.cold_boot(image))
        runs.append(_cluster_round(nodes, image, driver, memory))
    return _summary(colds, runs, nodes=nodes, image=image, memory=memory, rounds=rounds)


def bench_compare(nodes: int = 4, image: str = "debian-12", memory: int = 512,
                  rounds: int = 3, drivers: tuple[str, ...] = ("qemu", "libvirt"),
                  ) -> dict[str, Any]:
    """:func:`bench_cluster` for several drivers in one run, their rounds interleaved so
    that each driver sees the same load of a shared machine. Adds
    ``libvirt_over_qemu`` = libvirt cluster_ready_s / qemu cluster_ready_s."""
    drvs = {name: get_driver(name, mem_mb=memory) for name in drivers}
    for drv in drvs.values():
        drv.prepare({image})
    colds: dict[str, list[float]] = {name: [] for name in drivers}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in drivers}
    for _ in range(rounds):
        for name, drv in drvs.items():
            colds[name].append(drv.cold_boot(image))
            runs[name].append(_cluster_round(nodes, image, name, memory))
    result: dict[str, Any] = {"nodes": nodes, "image": image, "rounds": rounds}
    for name in drivers:
        result[name] = _summary(colds[name], runs[name], nodes=nodes, image=image,
                                memory=memory, rounds=rounds)
    if "qemu" in result and "libvirt" in result:
        result["libvirt_over_qemu"] = round(
            result["libvirt"]["cluster_ready_s"] / result["qemu"]["cluster_ready_s"], 4)
    return result


def _mem_ratio(mem: dict[str, float | None]) -> dict[str, Any]:
    """``private_mem_ratio`` (the largest clone's), or None with the reason it is missing."""
    unread = sorted(name for name, ratio in mem.items() if ratio is None)
    if not mem or unread:
        why = (f"/proc/<pid>/smaps_rollup could not be read for {', '.join(unread)}"
               if unread else "the driver reported no memory figures")
        return {"private_mem_ratio": None, "private_mem_ratio_reason": why}
    return {"private_mem_ratio": round(max(v for v in mem.values() if v is not None), 4)}


def _summary(colds: list[float], runs: list[dict[str, Any]], *, nodes: int, image: str,
             memory: int, rounds: int) -> dict[str, Any]:
    middle = sorted(runs, key=lambda r: r["ready"])[len(runs) // 2]
    cold = statistics.median(colds)
    ready = middle["ready"]
    clone_ready = [round(x, 3) for x in middle["clone_ready"]]
    return {
        "accel": middle["accel"],
        "accel_reason": middle["accel_reason"],
        "driver": middle["driver"],
        "image": image,
        "nodes": nodes,
        "memory_mb": memory,
        "rounds": rounds,
        "cold_boot_s": round(cold, 3),
        "clone_ready_s": clone_ready,
        "clone_ready_median_s": round(statistics.median(clone_ready), 3),
        "cluster_ready_s": round(ready, 3),
        "ratio_ready_vs_cold": round(ready / cold, 4),
        "teardown_s": round(statistics.median(r["teardown"] for r in runs), 3),
        **_mem_ratio(middle["mem"]),
        "per_round": {
            "cold_boot_s": [round(c, 3) for c in colds],
            "cluster_ready_s": [round(r["ready"], 3) for r in runs],
            "teardown_s": [round(r["teardown"], 3) for r in runs],
        },
    }
