"""The MCP server's tools through the SDK's in-memory client, on the in-memory cluster
twin: results, progress notifications, stop_run and cancellation. The same server runs
as its own process over stdio in tests/integration and on real VMs in tests/vm."""

from __future__ import annotations

import json
import threading
import time

import anyio
import pytest

from antrieb import store
from antrieb.converge import converger as converger_mod
from antrieb.converge.record import load_run
from tests.timebounds import within

from .converge.fakes import FakeNode, LoadBalancerWorld, host_assertions_pass

pytestmark = pytest.mark.anyio


class SlowWorld(LoadBalancerWorld):
    """Scripts take a while (until the cluster goes down), so a run can be stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()

    def script(self, node: FakeNode, role: str, text: str):
        self.started.set()
        deadline = time.monotonic() + 20
        while node.cluster.state == "up" and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().script(node, role, text)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _twin(world, tmp_path, monkeypatch):
    from antrieb.converge import checks

    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANTRIEB_STORE", raising=False)
    monkeypatch.setattr(checks, "_assert_host", host_assertions_pass)
    monkeypatch.setattr(checks, "_sleep", lambda seconds: None)
    monkeypatch.setattr(converger_mod, "default_cluster_factory", world.factory())
    return world


@pytest.fixture
def world(tmp_path, monkeypatch):
    return _twin(LoadBalancerWorld(), tmp_path, monkeypatch)


@pytest.fixture
def world_slow(tmp_path, monkeypatch):
    return _twin(SlowWorld(), tmp_path, monkeypatch)


def client():
    from mcp.client.client import Client

    from antrieb.mcp.server import build_server

    return Client(build_server())


async def test_run_example_result_progress_and_store(world):
    messages: list[str] = []

    async def progress(done, total, message):
        messages.append(message)

    async with client() as c:
        result = await c.call_tool("run_example", {"name": "nginx-lb"},
                                   progress_callback=progress)
        assert not result.is_error, result.content
        out = result.structured_content
        assert out["status"] == "converged" and out["converged"]
        assert [it["path"] for it in out["iterations"]] == ["retry", None, None]
        assert out["iterations"][0]["failure_class"] == "config_syntax"
        assert "reload-or-restart" in out["final"]["lb"]
        assert out["figures"]["tokens"] is None  # a hand-written recording: not measured
        listed = (await c.call_tool("list_runs", {})).structured_content["result"]
        assert listed[0]["run_id"] == out["run_id"] and not listed[0]["in_progress_here"]
        run = (await c.call_tool("get_run", {"run_id": out["run_id"]})).structured_content
        assert run["decisions"][0]["path"] == "retry"
    assert messages[0].startswith("[run] run ") and out["run_id"] in messages[0]
    assert any("path retry" in m for m in messages)
    assert messages[-1].startswith("[run] converged")
    assert len(messages) >= 10  # steps, checks, decisions... as they happen


async def test_stop_run_and_cancel_stop_the_cluster(world_slow, monkeypatch):
    world = world_slow
    monkeypatch.setenv("ANTRIEB_MCP_MAX_RUNS", "1")
    async with client() as c:
        # stop_run from a second call while the first one runs
        got: dict = {}

        async def call() -> None:
            got["r"] = await c.call_tool("run_example", {"name": "nginx-lb"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await anyio.to_thread.run_sync(world.started.wait, 20)
            listed = (await c.call_tool("list_runs", {})).structured_content["result"]
            live = [r for r in listed if r["in_progress_here"]]
            assert len(live) == 1
            second = await c.call_tool("run_example", {"name": "firewall"})
            assert second.is_error and "in progress" in second.content[0].text
            assert "ANTRIEB_MCP_MAX_RUNS=1" in second.content[0].text
            stopped = await c.call_tool("stop_run", {"run_id": live[0]["run_id"]})
            assert stopped.structured_content["stopping"]
        out = got["r"].structured_content
        assert out["status"] == "stopped" and "stop_run" in out["reason"]
        assert all(cl.state == "down" for cl in world.clusters)

        # cancelling the call: the run ends as stopped, its cluster down
        world.started.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await anyio.to_thread.run_sync(world.started.wait, 20)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        while (any(cl.state != "down" for cl in world.clusters)
               and time.monotonic() - t0 < 60):
            await anyio.sleep(0.01)
        within("MCP cancel -> clusters down", time.monotonic() - t0, goal=1.0, bound=20)
    runs = store.list_runs()
    assert [r["status"] for r in runs[:2]] == ["stopped", "stopped"]
    record = load_run(runs[0]["run_id"])
    assert record["state"] == "stopped"
    assert record["result"]["reason"] == "cancelled by the MCP client"
    assert json.dumps(record)  # a complete record


def _answer(obj: dict):
    from .llm.chat_server import Reply

    return Reply(text=json.dumps(obj))


CANARY = "sk-canary-mcp-0123456789"


@pytest.fixture
def chat(monkeypatch):
    """A scripted chat-completions server: the real OpenAI client path of the provider
    the tools use when the client names no recording."""
    from .llm.chat_server import ChatServer

    def start(replies):
        server = ChatServer(replies).__enter__()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", CANARY)
        monkeypatch.delenv("ANTRIEB_LLM", raising=False)
        made.append(server)
        return server

    made: list = []
    yield start
    for server in made:
        server.__exit__(None, None, None)


def _no_canary_in_the_store() -> None:
    db = store.connect()
    for table in store.TABLES:
        assert CANARY not in json.dumps(db.rows(f"SELECT * FROM {table}")[1], default=str)
    db.close()


async def test_converge_a_task_in_words_with_the_configured_llm(world, chat):
    script = {"tool": "shell", "scripts": {"app": "echo hi > /srv/hello\n"}}
    server = chat([
        _answer({"notes": "one node writes the file", "artifacts": script,
                 "topology": {"nodes": [{"name": "node1", "role": "app"}]},
                 "checks": [{"name": "file there", "node": "node1",
                             "command": "test -s /srv/hello"}]}),
        _answer({"notes": "as it was", "artifacts": script}),
    ])
    async with client() as c:
        result = await c.call_tool("converge", {"request": "a file /srv/hello saying hi",
                                                "max_nodes": 1, "llm": "openai:test-model"})
        assert not result.is_error, result.content
    out = result.structured_content
    assert out["status"] == "converged", out["reason"]
    assert out["final"] == {"app": "echo hi > /srv/hello\n"}
    assert [(it["phase"], it["passed"]) for it in out["iterations"]] == [
        ("attempt", True), ("verify", True)]
    first = server.seen[0].body["messages"]
    assert "a file /srv/hello saying hi" in json.dumps(first)
    assert server.seen[0].headers["authorization"] == f"Bearer {CANARY}"
    run = store.get_run(out["run_id"])
    assert run["model"] == "test-model" and run["prompt_tokens"] > 0
    _no_canary_in_the_store()


class DeployWorld(LoadBalancerWorld):
    def script(self, node: FakeNode, role: str, text: str):
        if "apt-get install -y nginx" not in text:
            return 127, "", f"/root/antrieb/{role}.sh: line 2: nginx: command not found"
        return 0, "Setting up nginx ...\n", ""


async def test_deploy_user_code_reports_findings(tmp_path, monkeypatch, chat):
    _twin(DeployWorld(), tmp_path, monkeypatch)
    fixed = {"tool": "shell", "scripts": {"web": "apt-get install -y nginx\nnginx -v\n"}}
    chat([_answer({"explanation": "nginx was not installed; install it first",
                   "artifacts": fixed}),
          _answer({"notes": "install, then check", "artifacts": fixed})])
    async with client() as c:
        result = await c.call_tool("deploy", {
            "nodes": [{"name": "web1", "role": "web"}],
            "scripts": {"web": "nginx -v\n"},
            "checks": [{"name": "nginx answers", "node": "web1", "command": "true"}],
            "llm": "openai:test-model"})
        assert not result.is_error, result.content
    out = result.structured_content
    assert out["status"] == "converged", out["reason"]
    assert out["iterations"][0]["failure_class"] in {"missing_command", "missing_package"}
    assert out["iterations"][0]["path"] == "retry"
    assert len(out["findings"]) == 1 and "nginx was not installed" in out["findings"][0]
    assert out["final"]["web"].startswith("apt-get install -y nginx")
    _no_canary_in_the_store()


async def test_two_runs_at_once_each_with_only_its_own_events(world):
    seen: dict[str, list[str]] = {"a": [], "b": []}
    results: dict = {}

    async with client() as c:
        async def run(key: str) -> None:
            async def progress(done, total, message):
                seen[key].append(message)

            results[key] = await c.call_tool("run_example", {"name": "nginx-lb"},
                                             progress_callback=progress)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a")
            tg.start_soon(run, "b")
    ids = {}
    for key in ("a", "b"):
        assert not results[key].is_error, results[key].content
        out = results[key].structured_content
        assert out["status"] == "converged"
        ids[key] = out["run_id"]
    assert ids["a"] != ids["b"]
    for key, other in (("a", "b"), ("b", "a")):
        assert ids[key] in seen[key][0] and seen[key][-1].startswith("[run] converged")
        assert not any(ids[other] in m for m in seen[key])
        assert seen[key].count(seen[key][-1]) == 1  # one run_finished: its own
