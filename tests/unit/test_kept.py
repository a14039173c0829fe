"""Kept clusters: published by their process, reached by `antrieb cluster list|exec|down`
from another one (here the CLI in-process, through the real Unix socket)."""

from __future__ import annotations

import json
import time
import types

from typer.testing import CliRunner

from antrieb import kept
from antrieb.cli import app
from antrieb.ssh import Result


class Twin:
    def __init__(self) -> None:
        self.id, self.keep = "ckept1", True
        self.state = types.SimpleNamespace(value="ready")
        self.nodes = [types.SimpleNamespace(name=n, role="web", image="debian-12", ip=ip)
                      for n, ip in (("web1", "10.0.0.2"), ("web2", "10.0.0.3"))]

    def __iter__(self):
        return iter(self.nodes)

    def run_all(self, command, timeout=600.0, nodes=None):
        if set(nodes) - {"web1", "web2"}:
            raise KeyError(f"no node {nodes[0]!r} in cluster {self.id}")
        return {n: Result(node=n, command=command, exit_status=0 if n == "web1" else 3,
                          stdout=f"{n} says {command}\n", stderr="", seconds=0.1)
                for n in nodes}

    def down(self) -> None:
        self.state.value = "down"
        kept.withdraw(self.id)


def test_list_exec_down_through_the_keepers_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    twin = Twin()
    kept.publish(twin, via="notebook")
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["cluster", "list", "--json"]).stdout)
    assert [c["cluster"] for c in listed["clusters"]] == ["ckept1"]
    assert listed["clusters"][0]["nodes"][1]["ip"] == "10.0.0.3"
    one = runner.invoke(app, ["cluster", "exec", "ckept1", "uptime", "--node", "web1"])
    assert one.exit_code == 0 and "web1 says uptime" in one.stdout
    both = runner.invoke(app, ["cluster", "exec", "ckept1", "uptime", "--json"])
    assert both.exit_code == 1  # web2 failed
    assert [json.loads(line)["node"] for line in both.stdout.splitlines()] == ["web1", "web2"]
    bad = runner.invoke(app, ["cluster", "exec", "ckept1", "true", "--node", "nope"])
    assert bad.exit_code == 2
    down = runner.invoke(app, ["cluster", "down", "ckept1"])
    assert down.exit_code == 0, down.output
    t0 = time.monotonic()
    while twin.state.value != "down":
        assert time.monotonic() - t0 < 5
    assert kept.list_kept() == []
    assert runner.invoke(app, ["cluster", "exec", "ckept1", "true"]).exit_code == 2
