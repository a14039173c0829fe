"""``antrieb cache list|prune``: JSON for programs, the limit, exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from antrieb.cli import app

runner = CliRunner()


def world(cache):
    old = cache.image("0123456789ab")
    golden = cache.golden(cache.image(), "c" * 12)
    cache.saved("mine", golden)
    return old


def test_list_json(cache, monkeypatch):
    world(cache)
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", "20G")
    result = runner.invoke(app, ["cache", "list", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["max_bytes"] == 20 << 30 and doc["root"] == str(cache.root)
    assert doc["total_bytes"] == sum(e["bytes"] for e in doc["entries"]) > 0
    kinds = {e["name"]: (e["kind"], e["prunable"]) for e in doc["entries"]}
    assert kinds == {"base-0123456789ab": ("image", True), f"base-{cache.current}": (
        "image", False), "base-cccccccccccc": ("golden", False), "mine": ("saved", False)}
    row = doc["entries"][0]
    assert {"key", "path", "bytes", "last_used", "in_use", "outdated", "why", "needs"} <= set(row)
    human = runner.invoke(app, ["cache", "list"])
    assert human.exit_code == 0 and "limit 20.0 GiB" in human.stdout


def test_prune_json_dry_run_then_for_real(cache):
    old = world(cache)
    result = runner.invoke(app, ["cache", "prune", "--max", "0", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dry_run"] and doc["max_bytes"] == 0 and old.exists()
    assert [e["name"] for e in doc["evicted"]] == [old.name]
    assert doc["evicted"][0]["why"] == "its recipe changed"
    assert doc["total_bytes"] == doc["total_bytes_before"] - doc["freed_bytes"] > 0
    result = runner.invoke(app, ["cache", "prune", "--max", "0", "--json"])
    assert json.loads(result.stdout)["freed_bytes"] == doc["freed_bytes"]
    assert not old.exists()
    assert "evicted image base-0123456789ab" in result.stderr  # progress on stderr
    human = runner.invoke(app, ["cache", "prune", "--max", "0"])
    assert "still over the limit" in human.stdout


def test_a_bad_size_exits_2(cache, monkeypatch):
    result = runner.invoke(app, ["cache", "prune", "--max", "lots"])
    assert result.exit_code == 2 and "--max: 'lots' is not a size" in result.stderr
    monkeypatch.setenv("ANTRIEB_CACHE_MAX", "1.5.5G")
    assert runner.invoke(app, ["cache", "list"]).exit_code == 2
