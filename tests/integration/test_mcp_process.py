"""`antrieb mcp` as a separate process, driven by the official MCP client over stdio
(and streamable HTTP):
the tools, the examples, the run store, and clear errors for bad input. Runs on real
VMs are in tests/vm/test_mcp.py."""

from __future__ import annotations

import json

import pytest

from antrieb import store

from .conftest import EXAMPLE_RUNS, mcp_client

pytestmark = pytest.mark.anyio

TOOLS = {"converge", "deploy", "list_examples", "run_example", "list_runs", "get_run",
         "stop_run"}


def _data(result):
    assert not result.is_error, [c.text for c in result.content]
    data = result.structured_content
    return data["result"] if set(data) == {"result"} else data


def _error(result) -> str:
    assert result.is_error
    return " ".join(c.text for c in result.content)


@pytest.fixture
def env(private_cache):
    for folder in EXAMPLE_RUNS:
        store.ingest_run(folder)
    return {"ANTRIEB_CACHE": str(private_cache)}


async def test_tools_examples_runs_and_bad_input_over_stdio(env):
    async with mcp_client(env) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) >= TOOLS
        assert "request" in tools["converge"].input_schema["required"]
        assert tools["run_example"].description

        examples = _data(await session.call_tool("list_examples", {}))
        assert {"nginx-lb", "haproxy-nginx", "firewall", "postgres-replica"} <= {
            e["name"] for e in examples}
        lb = next(e for e in examples if e["name"] == "nginx-lb")
        assert len(lb["nodes"]) == 3 and lb["expected_paths"]

        listed = _data(await session.call_tool("list_runs", {"limit": 10}))
        assert len(listed) == len(EXAMPLE_RUNS)
        assert {r["status"] for r in listed} == {"converged"}
        assert all(r["iterations"] == 3 for r in listed)

        haproxy = next(r for r in listed if r["task_name"] == "haproxy-nginx")
        run = _data(await session.call_tool("get_run", {"run_id": haproxy["run_id"]}))
        assert run["status"] == "converged" and run["iteration_count"] == 3
        assert [d["path"] for d in run["decisions"]] == ["troubleshoot"]
        assert run["decisions"][0]["reason"]
        assert [t["command"] for t in run["troubleshoot"]][1] == "ss -ltnp"
        assert "haproxy" in run["final_artifacts"]["lb"]
        assert all(c["passed"] for c in run["checks"] if c["iteration"] == 3)

        # bad input: a clear tool error, and the server goes on (one process for both,
        # since starting it costs seconds)
        msg = _error(await session.call_tool("run_example", {"name": "no-such-example"}))
        assert "no example 'no-such-example'" in msg and "nginx-lb" in msg
        msg = _error(await session.call_tool("get_run", {"run_id": "r-nope"}))
        assert "no run 'r-nope'" in msg
        msg = _error(await session.call_tool("list_runs", {"limit": "many"}))
        assert "limit" in msg and "integer" in msg
        msg = _error(await session.call_tool("run_example", {}))
        assert "name" in msg and "required" in msg.lower()
        msg = _error(await session.call_tool("deploy", {
            "nodes": [{"name": "web1", "role": "web"}], "scripts": {"web": "true"},
            "checks": [{"name": "up", "node": "web9", "command": "true"}]}))
        assert "web9" in msg and "not a node" in msg
        msg = _error(await session.call_tool("deploy", {
            "nodes": [{"name": "a", "role": "x"}] * 5, "scripts": {"x": "true"},
            "checks": [{"name": "up", "node": "a", "command": "true"}]}))
        assert "nodes" in msg
        msg = _error(await session.call_tool("converge", {"request": "nginx", "max_nodes": 9}))
        assert "max_nodes" in msg
        msg = _error(await session.call_tool("converge", {"request": "x", "llm": "bogus"}))
        assert "unknown LLM spec" in msg
        msg = _error(await session.call_tool("stop_run", {"run_id": "r-nope"}))
        assert "no run 'r-nope' in progress" in msg
        # the server is still fine, and nothing was recorded by the refused calls
        assert len(_data(await session.call_tool("list_runs", {}))) == len(EXAMPLE_RUNS)
    assert json.loads(json.dumps(store.list_runs()))  # the store is intact


async def test_streamable_http_serves_the_same_tools(env, tmp_path):
    """`antrieb mcp --http` as its own process on a loopback port."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "antrieb"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "mcp", "--http", "--port", str(port)],
                            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        with anyio.fail_after(60):
            while True:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    await anyio.sleep(0.2)
        url = f"http://127.0.0.1:{port}/mcp"
        async with streamable_http_client(url) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            assert {t.name for t in (await session.list_tools()).tools} >= TOOLS
            listed = _data(await session.call_tool("list_runs", {}))
            assert len(listed) == len(EXAMPLE_RUNS)
            assert _error(await session.call_tool("run_example", {"name": "x"}))
    finally:
        proc.send_signal(signal.SIGINT)  # the server we started, by its PID
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
