"""`antrieb mcp` on real VMs, driven by the official MCP client over stdio as a separate
process: run_example nginx-lb converges (the issue's must-show), and a cancelled call
stops the cluster at once and records the run as stopped."""

from __future__ import annotations

import json
import os
import re
import time

import anyio
import pytest

from antrieb import config, store
from tests.integration.conftest import mcp_client
from tests.timebounds import within

from .conftest import qemu_pids
from .test_cli_cluster import qemu_pids_under


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def server_env(tmp_path, debian12):
    """The server uses the real cache (built images, run records) and a private store."""
    env = {k: v for k, v in os.environ.items() if k.startswith("ANTRIEB_")}
    env["ANTRIEB_STORE"] = str(tmp_path / "store.sqlite")
    return env


@pytest.mark.timeout(1800)  # ~4 min on an idle 2-core TCG host; far more when it is busy
def test_run_example_nginx_lb_converges_over_mcp(nginx_lb_over_mcp):
    run = nginx_lb_over_mcp
    out, messages = run.answer, run.messages
    print(f"\nrun_example nginx-lb over MCP: {run.seconds:.1f}s, "
          f"{len(messages)} progress notifications")
    print(json.dumps({k: out[k] for k in ("run_id", "status", "reason", "figures")},
                     indent=1))
    assert out["status"] == "converged" and out["converged"], out["reason"]
    assert [it["path"] for it in out["iterations"] if it["path"]] == ["retry"]
    assert all(it["why"] for it in out["iterations"] if it["path"])
    assert "upstream" in out["final"]["lb"]
    assert any("iteration 1 (attempt)" in m for m in messages)
    assert any("path retry" in m for m in messages)
    assert any("check " in m and ": pass" in m for m in messages)
    # the same server lists the run from the store
    assert run.listed[0]["run_id"] == out["run_id"] and run.listed[0]["status"] == "converged"
    assert run.listed[0]["iterations"] == len(out["iterations"])
    row = store.get_run(out["run_id"], url=run.store)
    assert row["status"] == "converged" and row["decisions"][0]["path"] == "retry"


@pytest.mark.anyio
@pytest.mark.timeout(900)
async def test_cancelling_the_call_stops_the_cluster_and_records_stopped(server_env):
    messages: list[str] = []
    ready = anyio.Event()

    async def progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if "cluster ready" in (message or ""):
            ready.set()

    async with mcp_client(server_env) as session:
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                await session.call_tool("run_example", {"name": "nginx-lb"},
                                        progress_callback=progress)

            tg.start_soon(call)
            with anyio.fail_after(300):
                await ready.wait()
            ours = qemu_pids_under(os.getpid())
            assert len(ours) == 3  # lb, web1, web2 are up
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        while qemu_pids() & ours and time.monotonic() - t0 < 30:
            await anyio.sleep(0.02)
        gone_s = time.monotonic() - t0
        print(f"\ncancel -> all 3 VMs gone in {gone_s:.2f}s")
        assert not qemu_pids() & ours
        within("MCP cancel -> all 3 VMs gone", gone_s, goal=1.0, bound=20)
        run_id = re.search(r"run (r\d{8}-\d{6}-[0-9a-f]{4})", messages[0]).group(1)
        record = config.cache_dir() / "runs" / run_id / "run.json"
        deadline = time.monotonic() + 30
        while json.loads(record.read_text())["state"] != "stopped":
            assert time.monotonic() < deadline, record.read_text()[:500]
            await anyio.sleep(0.1)
        data = json.loads(record.read_text())
        assert data["result"]["reason"] == "cancelled by the MCP client"
        # the server goes on serving after the cancel
        listed = (await session.call_tool("list_runs", {})).structured_content["result"]
        assert listed[0]["run_id"] == run_id and listed[0]["status"] == "stopped"
