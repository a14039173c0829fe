"""Benchmarks that print figures: measured side by side in one run, never asserted."""

from __future__ import annotations

import statistics
import time
from typing import Any

from antrieb.cluster import Cluster
from antrieb.vm.driver import get_driver


def bench_cluster(nodes: int = 4, image: str = "debian-12", driver: str | None = None,
                  memory: int = 512) -> dict[str, Any]:
    """Cold-boot one VM, then bring up an N-node cluster from the golden snapshot.

    ``cold_boot_s``: a fresh VM from launch to sshd answering. ``clone_ready_s``: per
    node, from restore start to identity applied and sshd answering. ``cluster_ready_s``:
    the whole ``Cluster.up()`` with artefacts cached (supervisor, network, all clones).
    ``private_mem_ratio``: the largest clone's own (anonymous) memory / its guest RAM.
    """
    drv = get_driver(driver, mem_mb=memory)
    drv.prepare({image})  # builds or loads image and golden: not part of any figure
    cold = drv.cold_boot(image)
    cluster = Cluster(nodes=nodes, image=image, driver=get_driver(driver, mem_mb=memory),
                      memory=memory)
    t0 = time.monotonic()
    cluster.up()
    ready = time.monotonic() - t0
    try:
        stats = cluster.driver.stats()
        ok = cluster.run_all("true", timeout=60)
        assert all(r.ok for r in ok.values()), ok
    finally:
        t1 = time.monotonic()
        cluster.down()
        teardown = time.monotonic() - t1
    clone_ready = [round(cluster.timings["nodes"][p.name]["ssh"], 3) for p in cluster.plans]
    mem_ratios = {name: s["memory"].get("Anonymous", 0) / (s["mem_mb"] * 2**20)
                  for name, s in stats.items()}
    return {
        "accel": cluster.driver.accel,
        "accel_reason": cluster.driver.accel_reason,
        "driver": cluster.driver.name,
        "image": image,
        "nodes": nodes,
        "memory_mb": memory,
        "cold_boot_s": round(cold, 3),
        "clone_ready_s": clone_ready,
        "clone_ready_median_s": round(statistics.median(clone_ready), 3),
        "cluster_ready_s": round(ready, 3),
        "ratio_ready_vs_cold": round(ready / cold, 4),
        "teardown_s": round(teardown, 3),
        "private_mem_ratio": round(max(mem_ratios.values()), 4),
        "private_mem_ratio_per_node": {k: round(v, 4) for k, v in mem_ratios.items()},
    }
