"""Reliability tests: stop, kill -9, soak, containment, secrets. All boot real VMs, so
every test here carries the ``vm`` marker; the fixtures are the VM tier's own."""

from __future__ import annotations

import pytest

import tests.vm.conftest as vm_conftest

# The VM tier's fixtures (debian12, cluster_factory and whatever they depend on), re-used
# as they are: every fixture that module defines is made visible here.
globals().update({name: value for name, value in vars(vm_conftest).items()
                  if type(value).__name__ == "FixtureFunctionDefinition"})


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
