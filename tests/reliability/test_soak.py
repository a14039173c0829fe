"""A short soak in CI (the 100-cluster one runs outside: ``antrieb bench soak``): clusters
up and down in a row leave nothing behind and grow nothing in this process."""

from __future__ import annotations

import json
import os

from antrieb import config
from antrieb.bench_soak import bench_soak

CLUSTERS = int(os.environ.get("ANTRIEB_SOAK_CLUSTERS", "8"))


def test_clusters_in_a_row_grow_nothing(debian12):
    figures = bench_soak(clusters=CLUSTERS, nodes=1)
    (config.REPO_ROOT / "test-reports").mkdir(exist_ok=True)
    (config.REPO_ROOT / "test-reports" / "soak.json").write_text(json.dumps(figures, indent=1))
    grew, after = figures["growth"], figures["after"]
    print(f"soak of {CLUSTERS}: growth {grew}, ready {figures['ready_s']}")
    assert figures["processes_started"] >= 2 * CLUSTERS  # a supervisor and a QEMU each
    assert after["processes"]["started_still_alive"] == 0
    # other tests' session servers (e.g. the integration tier's PostgreSQL) may be our
    # descendants already: what counts is that the soak added none
    assert grew["processes"]["descendants"] <= 0, grew
    assert after["namespaces"]["held_by_soak"] == 0
    assert grew["open_files"] <= 0, grew
    assert figures["python_threads"]["after"] <= figures["python_threads"]["before"]
    assert after["disk"]["runtime_entries"] == 0
    assert figures["no_growth"]
