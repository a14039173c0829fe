"""Unit tier of convergence: every run records into a temporary cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _no_settle_time(monkeypatch):
    """Checks wait between attempts for services to settle; the twin needs no wait."""
    from antrieb.converge import checks

    monkeypatch.setattr(checks, "_sleep", lambda seconds: None)
