"""Shared test set-up. "No tests ran" is a failure here, never a silent pass, and every
session says which tiers ran and which did not (nothing is skipped silently).

Tiers are markers: ``vm`` (real VMs), ``browser`` (JupyterLab + Chromium), ``db`` (a
private PostgreSQL), ``slow`` (the curated examples' extra live convergences). Plain
``./dev test`` (what CI runs) leaves out ``slow``; ``./dev test --all`` passes
``--slow``; ``./dev test --fast`` keeps only the tests that need none of them.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests import timebounds

TIERS = ("vm", "browser", "db", "slow")
_deselected: Counter[str] = Counter()
_selected: Counter[str] = Counter()
_slow_left_out: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the slow tier (./dev test --all does)")


def _tier(item: pytest.Item) -> str:
    names = [t for t in TIERS if item.get_closest_marker(t)]
    return "+".join(names) if names else "fast"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
    # -m naming slow (e.g. -m slow) is an explicit choice: leave it to -m.
    if config.getoption("--slow") or "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [i for i in items if i.get_closest_marker("slow")]
    if slow:
        _slow_left_out.extend(i.nodeid for i in slow)
        items[:] = [i for i in items if not i.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.update(_tier(i) for i in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    _selected.update(_tier(i) for i in session.items)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    tr.section("tiers")
    sel = ", ".join(f"{t} {n}" for t, n in sorted(_selected.items())) or "none"
    tr.write_line(f"selected: {sel}")
    if _deselected:
        tr.write_line("not run:  " + ", ".join(f"{t} {n}" for t, n in sorted(_deselected.items()))
                      + f" (deselected; -m {config.getoption('markexpr') or '(none)'!r})")
    if _slow_left_out:
        tr.write_line(f"slow tier left out ({len(_slow_left_out)} tests): ./dev test --all "
                      "runs them; run it before resolving an issue that touches the engine, "
                      "the images or the examples")
        for nodeid in _slow_left_out:
            tr.write_line(f"  {nodeid}")
    if timebounds.MEASURED:
        tr.section("time bounds (goal / generous bound)")
        for m in timebounds.MEASURED:
            tr.write_line(m.line())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _no_real_vm_in_the_fast_tier(request: pytest.FixtureRequest,
                                 monkeypatch: pytest.MonkeyPatch):
    """A test without a tier marker must not boot or build a VM: one that did (a layer
    made in the background behind the in-memory twin) cost a minute or two each and
    filled the temp folder with image builds. The driver is refused, and the test fails
    even where the refusal was caught (a background thread, a fall-back)."""
    if _tier(request.node) != "fast":
        yield
        return
    from antrieb import cluster

    asked: list[str] = []
    real_driver = cluster.get_driver

    def guarded(*args, **kwargs):
        driver = real_driver(*args, **kwargs)  # making one is cheap; using it is not

        def refuse(what: str):
            def refused(*_, **__):
                asked.append(f"{type(driver).__name__}.{what}")
                raise AssertionError(f"a fast-tier test asked a real VM driver to {what}; "
                                     "mark it vm or use the in-memory twin")
            return refused

        for what in ("prepare", "start", "cold_boot"):
            setattr(driver, what, refuse(what))
        return driver

    monkeypatch.setattr(cluster, "get_driver", guarded)
    yield
    assert not asked, (f"a fast-tier test asked for a real VM driver ({', '.join(asked)}): "
                       "mark it vm or use the in-memory twin")


@pytest.fixture
def sigint_handled():
    """interrupt_main does nothing while SIGINT is ignored, as a process started in the
    background of a non-interactive shell (a CI) inherits it: Python's own handler, as in
    a terminal, for the test; the inherited one back after it."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
