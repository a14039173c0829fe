"""Fixtures for the real-VM tier: images built once per run, clusters always torn down,
and each VM's serial console kept next to the test report when a test fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from antrieb import Cluster, config

REPORTS = config.REPO_ROOT / "test-reports"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            # The first test to need an image builds it (and its golden snapshot): on a
            # fresh, busy machine that can take minutes.
            if not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(900))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def debian12():
    """debian-12 built (or taken from the cache) and its golden snapshot made, once."""
    from antrieb.vm.driver import get_driver

    driver = get_driver("qemu")
    driver.prepare({"debian-12"})
    return driver


@pytest.fixture
def cluster_factory(request, debian12):
    """Make clusters; all are torn down after the test, consoles saved if it failed."""
    made: list[Cluster] = []

    def make(*args, **kwargs) -> Cluster:
        cluster = Cluster(*args, **kwargs)
        made.append(cluster)
        try:
            cluster.up()
        except Exception:
            _save_consoles(request.node, cluster, cluster.driver)
            raise
        return cluster

    yield make
    failed = any(getattr(request.node, f"rep_{w}", None) is not None
                 and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
    for cluster in made:
        if failed:
            _save_consoles(request.node, cluster, cluster.driver)
        cluster.down()


def _save_consoles(node, cluster: Cluster, driver) -> None:
    folder = REPORTS / "consoles" / re.sub(r"[^\w.-]+", "_", node.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    for plan in cluster.plans:
        try:
            text = driver.console(plan.name)
        except Exception as exc:  # the report must not hide the real failure
            text = f"(console unavailable: {exc})"
        (folder / f"{cluster.id}-{plan.name}.log").write_text(text)


def qemu_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"qemu-system-x86_64") and b"-name" in cmd:
                name = cmd[cmd.index(b"-name") + 1]
                if name.startswith(b"antrieb-"):
                    pids.add(int(entry.name))
    return pids


def _namespaces(kind: str) -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.add(str((entry / "ns" / kind).readlink()))
            except OSError:
                continue
    return found


def net_namespaces() -> set[str]:
    return _namespaces("net")


def mount_namespaces() -> set[str]:
    return _namespaces("mnt")
