"""The cluster tools and the pool's lifetimes and quotas, through the SDK's in-memory
client on an in-memory cluster twin. The same tools run on real VMs, with the server as
its own process, in tests/vm/test_mcp_clusters.py."""

from __future__ import annotations

import base64
import time
from typing import ClassVar

import anyio
import pytest

from antrieb.errors import LimitError
from antrieb.mcp.pool import ClusterPool, Limits
from antrieb.ssh import Result

pytestmark = pytest.mark.anyio


class FakeNode:
    def __init__(self, cluster: FakeCluster, name: str, role: str, image: str, ip: str):
        self.cluster, self.name, self.role, self.image, self.ip = cluster, name, role, image, ip
        self.files: dict[str, bytes] = {}

    def run(self, command: str, timeout: float = 600.0) -> Result:
        self.cluster.commands.append((self.name, command))
        if "sleep-forever" in command:
            while self.cluster.state == "ready" and not self.cluster.killed.is_set():
                time.sleep(0.01)
            return Result(node=self.name, command=command, exit_status=None, stdout="",
                          stderr="", seconds=1.0, timed_out=True)
        if command.startswith("kill -KILL"):
            self.cluster.killed.set()
        out = "Debian GNU/Linux 12 (bookworm)\n" if "os-release" in command else "ok\n"
        if command.startswith("stat "):
            path = command.split("-- ")[1].strip("'")
            out = f"{len(self.files.get(path, b''))}\n"
        return Result(node=self.name, command=command, exit_status=0, stdout=out,
                      stderr="", seconds=0.01)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = data

    def get(self, path: str) -> bytes:
        return self.files[path]


class FakeCluster:
    made: ClassVar[list[FakeCluster]] = []

    def __init__(self, nodes: list[dict]):
        import threading

        self.id = f"c{len(FakeCluster.made)}"
        self.state = "new"
        self.keep = False
        self.commands: list[tuple[str, str]] = []
        self.killed = threading.Event()
        self.nodes = [FakeNode(self, n["name"], n.get("role", "node"),
                               n.get("image", "debian-12"), f"10.0.0.{i + 2}")
                      for i, n in enumerate(nodes)]
        FakeCluster.made.append(self)

    def up(self) -> FakeCluster:
        self.state = "ready"
        return self

    def down(self) -> None:
        self.state = "down"

    def __getitem__(self, name: str) -> FakeNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in cluster {self.id}")

    def __iter__(self):
        return iter(self.nodes)

    def run_all(self, command: str, timeout: float = 600.0, nodes=None) -> dict:
        chosen = [self[n] for n in nodes] if nodes else self.nodes
        return {n.name: n.run(command, timeout) for n in chosen}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def pool():
    FakeCluster.made = []
    return ClusterPool(Limits(lifetime=600, max_lifetime=900, per_client=2, total=3,
                              file_bytes=64), factory=FakeCluster, tick=0.05)


def client(pool: ClusterPool):
    from mcp.client.client import Client

    from antrieb.mcp.server import build_server

    return Client(build_server(pool))


async def test_up_exec_files_status_extend_down(pool):
    async with client(pool) as c:
        up = await c.call_tool("cluster_up", {"nodes": [{"name": "a"}, {"name": "b"}]})
        assert not up.is_error, up.content
        out = up.structured_content
        cid = out["cluster"]
        assert [n["name"] for n in out["nodes"]] == ["a", "b"]
        assert out["nodes"][0]["os"].startswith("Debian") and out["expires_in_s"] == 600
        ran = (await c.call_tool("exec", {"cluster": cid, "command": "hostname"})
               ).structured_content
        assert [r["node"] for r in ran["results"]] == ["a", "b"]
        assert ran["results"][0]["command"] == "hostname"  # no bookkeeping shown
        put = await c.call_tool("put_file", {"cluster": cid, "node": "a", "path": "/x",
                                             "content": base64.b64encode(b"\xff\x00").decode(),
                                             "encoding": "base64"})
        assert not put.is_error, put.content
        got = (await c.call_tool("get_file", {"cluster": cid, "node": "a", "path": "/x"})
               ).structured_content
        assert got["encoding"] == "base64" and base64.b64decode(got["content"]) == b"\xff\x00"
        big = await c.call_tool("put_file", {"cluster": cid, "node": "a", "path": "/y",
                                             "content": "x" * 65})
        assert big.is_error and "ANTRIEB_MCP_FILE_MAX_BYTES=64" in big.content[0].text
        rel = await c.call_tool("put_file", {"cluster": cid, "node": "a", "path": "y",
                                             "content": "x"})
        assert rel.is_error and "absolute" in rel.content[0].text
        ext = (await c.call_tool("cluster_extend", {"cluster": cid, "seconds": 10_000})
               ).structured_content
        assert 890 <= ext["expires_in_s"] <= 900  # capped at the maximum lifetime
        again = await c.call_tool("cluster_extend", {"cluster": cid})
        assert again.is_error and "ANTRIEB_MCP_CLUSTER_MAX_LIFETIME" in again.content[0].text
        status = (await c.call_tool("cluster_status", {})).structured_content
        assert [s["cluster"] for s in status["clusters"]] == [cid]
        down = (await c.call_tool("cluster_down", {"cluster": cid})).structured_content
        assert down["down"] and FakeCluster.made[0].state == "down"
        gone = await c.call_tool("exec", {"cluster": cid, "command": "true"})
        assert gone.is_error and "no cluster of this client" in gone.content[0].text


async def test_a_third_cluster_over_the_quota_of_two_is_refused(pool):
    async with client(pool) as c:
        for _ in range(2):
            assert not (await c.call_tool("cluster_up", {"nodes": [{"name": "a"}]})).is_error
        third = await c.call_tool("cluster_up", {"nodes": [{"name": "a"}]})
        assert third.is_error
        assert "ANTRIEB_MCP_CLUSTERS_PER_CLIENT=2" in third.content[0].text
    # the client went away: the server's lifespan ended, every cluster is down
    assert [cl.state for cl in FakeCluster.made] == ["down", "down"]


async def test_an_expired_cluster_goes_down_without_a_call(pool):
    async with client(pool) as c:
        cid = (await c.call_tool("cluster_up", {"nodes": [{"name": "a"}], "lifetime_s": 1})
               ).structured_content["cluster"]
        with anyio.fail_after(5):
            while FakeCluster.made[0].state != "down":
                await anyio.sleep(0.05)
        assert pool.reaped == [cid]
        status = (await c.call_tool("cluster_status", {})).structured_content
        assert status["clusters"] == []


async def test_a_cancelled_exec_kills_the_command_in_the_guest(pool):
    async with client(pool) as c:
        cid = (await c.call_tool("cluster_up", {"nodes": [{"name": "a"}]})
               ).structured_content["cluster"]
        cluster = FakeCluster.made[0]
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.call_tool, "exec", {"cluster": cid, "command": "sleep-forever"})
            with anyio.fail_after(5):
                while not cluster.commands[1:]:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert cluster.killed.is_set()
        assert any(cmd.startswith("kill -KILL -- -$(cat /run/antrieb-exec-")
                   for _, cmd in cluster.commands)


def test_limits_from_settings_and_errors_name_the_limit(monkeypatch):
    monkeypatch.setenv("ANTRIEB_MCP_CLUSTERS_TOTAL", "1")
    monkeypatch.setenv("ANTRIEB_MCP_CLUSTER_LIFETIME", "30")
    limits = Limits.from_settings()
    assert (limits.total, limits.lifetime, limits.per_client) == (1, 30.0, 2)
    pool = ClusterPool(limits, factory=FakeCluster)
    pool.reserve("one", [{"name": "a"}])
    with pytest.raises(LimitError, match="ANTRIEB_MCP_CLUSTERS_TOTAL=1"):
        pool.reserve("two", [{"name": "a"}])
    assert pool.release("one") and pool.entries == {}


def test_http_needs_a_token_off_loopback():
    from antrieb.errors import ConfigError
    from antrieb.mcp.server import is_loopback, serve

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(ConfigError, match="bearer token"):
        serve(http=True, host="0.0.0.0", port=1, token=None)
