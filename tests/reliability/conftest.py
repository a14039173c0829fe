"""Reliability tests: stop, kill -9, soak, containment, secrets. All boot real VMs, so
every test here carries the ``vm`` marker; the fixtures are the VM tier's own."""

from __future__ import annotations

import pytest

from tests.vm.conftest import cluster_factory, debian12  # noqa: F401  (fixtures, re-used)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            if not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(900))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # cluster_factory reads rep_setup / rep_call to keep consoles of failed tests
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
