"""Borrowed clusters over MCP on real VMs, with the official client and `antrieb mcp` as
its own process: the agent's whole loop (up, exec, files, save_node, up from the saved
image, down), then lifetimes, quotas and teardown when the client's stdio closes.

Set ANTRIEB_MCP_TRANSCRIPT=path to write the client's transcript (calls and results)."""

from __future__ import annotations

import json
import os
import time

import anyio
import pytest

from antrieb.bench_soak import descendants
from antrieb.vm import saved
from tests.integration.conftest import mcp_client

from .test_cli_cluster import qemu_pids_under

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("ANTRIEB_") or k == "PATH"}
    return {**env, **extra}


def cluster_namespaces() -> set[str]:
    """Network namespaces (other than ours) of processes descending from this test: one a
    cluster, held by its supervisor and QEMUs."""
    ours, found = os.readlink("/proc/self/ns/net"), set()
    for pid in descendants():
        try:
            ns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if ns != ours:
            found.add(ns)
    return found


class Transcript:
    def __init__(self, session) -> None:
        self.session, self.lines = session, []

    async def call(self, tool: str, args: dict) -> dict:
        t0 = time.monotonic()
        result = await self.session.call_tool(tool, args)
        seconds = time.monotonic() - t0
        body = result.structured_content if not result.is_error else {
            "error": result.content[0].text}
        self.lines.append(f"-> {tool} {json.dumps(args)}\n<- ({seconds:.2f}s) "
                          f"{json.dumps(body)[:1500]}")
        return {"_s": seconds, "_error": result.is_error, **(body or {})}


@pytest.mark.timeout(900)
async def test_agent_loop_up_exec_files_save_up_from_saved_down(debian12):
    image = f"wt-mcp-{os.getpid()}"
    saved.remove(image)
    try:
        async with mcp_client(_env()) as session:
            t = Transcript(session)
            up = await t.call("cluster_up", {"nodes": [{"name": "web1", "role": "web"},
                                                       {"name": "db1", "role": "db"}]})
            assert not up["_error"], up
            cid = up["cluster"]
            assert [n["os"] for n in up["nodes"]] == ["Debian GNU/Linux 12 (bookworm)"] * 2
            ran = await t.call("exec", {"cluster": cid, "command": "hostname; ping -c1 -W2 "
                                        "db1 >/dev/null 2>&1 || getent hosts db1"})
            assert [r["exit_status"] for r in ran["results"]] == [0, 0]
            assert [r["stdout"].split()[0] for r in ran["results"]] == ["web1", "db1"]
            put = await t.call("put_file", {"cluster": cid, "node": "web1",
                                            "path": "/etc/antrieb-note", "content": "kept\n"})
            assert put["bytes"] == 5
            got = await t.call("get_file", {"cluster": cid, "node": "web1",
                                            "path": "/etc/antrieb-note"})
            assert got["content"] == "kept\n"
            await t.call("exec", {"cluster": cid, "node": "web1",
                                  "command": "echo in-ram > /dev/shm/note"})
            save = await t.call("save_node", {"cluster": cid, "node": "web1", "image": image})
            assert not save["_error"], save
            assert save["memory"] and save["origin"]["node"] == "web1"
            listed = await t.call("list_images", {})
            assert image in [s["name"] for s in listed["saved"]]
            up2_args = {"nodes": [{"name": "again", "image": image}]}
            up2 = await t.call("cluster_up", up2_args)
            assert not up2["_error"], up2
            seen = await t.call("exec", {"cluster": up2["cluster"], "command":
                                         "cat /etc/antrieb-note /dev/shm/note; hostname"})
            assert seen["results"][0]["stdout"].split() == ["kept", "in-ram", "again"]
            for c in (cid, up2["cluster"]):
                down = await t.call("cluster_down", {"cluster": c})
                assert down["down"]
            assert not qemu_pids_under(os.getpid())
        path = os.environ.get("ANTRIEB_MCP_TRANSCRIPT")
        if path:
            with open(path, "w") as f:
                f.write("\n".join(t.lines) + "\n")
                f.write(f"\ncluster_up (2 nodes) wall time: {up['_s']:.2f}s (server: "
                        f"{up['seconds']}s)\nsave_node wall time: {save['_s']:.2f}s\n"
                        f"cluster_up from the saved image (1 node): {up2['_s']:.2f}s\n")
    finally:
        saved.remove(image)


@pytest.mark.timeout(600)
async def test_expiry_quota_and_closing_stdio_tear_clusters_down(debian12):
    from antrieb import kept

    env = _env(ANTRIEB_MCP_CLUSTERS_PER_CLIENT="2")
    async with mcp_client(env) as session:
        t = Transcript(session)
        short = await t.call("cluster_up", {"nodes": [{"name": "n1"}], "lifetime_s": 10})
        long = await t.call("cluster_up", {"nodes": [{"name": "n1"}]})
        assert not short["_error"] and not long["_error"]
        assert len(qemu_pids_under(os.getpid())) == 2 and len(cluster_namespaces()) == 2
        third = await t.call("cluster_up", {"nodes": [{"name": "n1"}]})
        assert third["_error"] and "ANTRIEB_MCP_CLUSTERS_PER_CLIENT=2" in third["error"]
        # the short one expires without any call: its QEMU and its keeper record go
        with anyio.fail_after(30):
            while len(qemu_pids_under(os.getpid())) != 1 or len(cluster_namespaces()) != 1:
                await anyio.sleep(0.2)
        assert [r["cluster"] for r in kept.list_kept()
                if r["cluster"] in (short["cluster"], long["cluster"])] == [long["cluster"]]
        status = await t.call("cluster_status", {})
        assert [c["cluster"] for c in status["clusters"]] == [long["cluster"]]
    # the client closed its stdio: the server tore the rest down and exited
    with anyio.fail_after(30):
        while qemu_pids_under(os.getpid()) or cluster_namespaces():
            await anyio.sleep(0.2)
    assert long["cluster"] not in [r["cluster"] for r in kept.list_kept()]
