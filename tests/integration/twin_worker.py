"""``dask worker --preload tests.integration.twin_worker``: the worker's runs use the
in-memory cluster twin (:mod:`tests.unit.converge.fakes`) instead of VMs, so a test can
check what Dask distributes (runs, records, rows) without booting any. Needs the
repository on ``PYTHONPATH``."""

from __future__ import annotations

import os
import time
from typing import Any

# ANTRIEB_TWIN_SLOW=S: every script runs until its cluster goes down, at most S seconds
SLOW = "ANTRIEB_TWIN_SLOW"


def _world() -> Any:
    from tests.unit.converge.fakes import LoadBalancerWorld

    class SlowWorld(LoadBalancerWorld):
        def script(self, node, role, text):
            deadline = time.monotonic() + float(os.environ[SLOW])
            while node.cluster.state == "up" and time.monotonic() < deadline:
                time.sleep(0.05)
            return super().script(node, role, text)

    return SlowWorld() if os.environ.get(SLOW) else LoadBalancerWorld()


def patch_in(target: Any = None) -> None:
    """The twin in place of the VMs in this process (``target``: a pytest monkeypatch,
    or None to set the attributes for the process's lifetime)."""
    from antrieb.converge import checks, converger, runs
    from tests.unit.converge.fakes import host_assertions_pass

    put = target.setattr if target is not None else setattr
    put(converger, "default_cluster_factory", _world().factory())
    put(checks, "_assert_host", host_assertions_pass)
    put(checks, "_sleep", lambda seconds: None)
    put(runs, "warm_up", lambda images: None)  # no images for a twin


def dask_setup(worker: Any) -> None:
    patch_in()
