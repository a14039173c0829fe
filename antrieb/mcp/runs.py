"""The MCP tools over whole runs: ``converge``, ``deploy``, ``list_examples`` /
``run_example``, ``list_runs`` / ``get_run``, ``stop_run``.

A run goes on in a worker thread, so the server keeps answering meanwhile; several runs
go on at once (up to ``ANTRIEB_MCP_MAX_RUNS``), each seeing only the events of its own
scope (:func:`antrieb.events.scoped`). Its events become progress notifications (one a
step, check, decision...). When the client cancels the call, the run is stopped: the
cluster goes down at once and the run is recorded as ``stopped``.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from antrieb import events
from antrieb.errors import AntriebError, LimitError

# events worth a progress notification (the rest is chatter: VM states, raw commands)
_PROGRESS_KINDS = {"run_started", "iteration_started", "cluster_ready", "step_finished",
                   "check_finished", "failure_diagnosed", "recovery_chosen",
                   "troubleshoot_turn", "synthesized", "iteration_finished", "run_finished"}
STOP_WAIT_S = 60.0  # how long a cancelled call waits for its run to record the stop


def result_summary(result: Any) -> dict[str, Any]:
    """What a client needs from a RunResult: outcome, final code, why each path."""
    return {
        "run_id": result.run_id,
        "task": result.task_name,
        "status": result.status,
        "converged": result.converged,
        "reason": result.reason,
        "final": result.final.texts() if result.final is not None else None,
        "iterations": [
            {"number": it.number, "phase": it.phase, "passed": it.passed,
             "failure_class": it.diagnosis.failure_class if it.diagnosis else None,
             "diagnosis": it.diagnosis.summary if it.diagnosis else None,
             "path": it.recovery.path if it.recovery else None,
             "classified_by": it.recovery.classified_by if it.recovery else None,
             "why": it.recovery.reason if it.recovery else None,
             "explanation": it.explanation or None,
             "troubleshoot": [{"node": t.node, "command": t.command, "why": t.why,
                               "exit_status": t.exit_status} for t in it.troubleshoot]}
            for it in result.iterations],
        "findings": result.findings,
        "figures": {k: v for k, v in result.figures().items()
                    if k in ("total_s", "in_vm_s", "llm_s", "tokens", "llm_calls", "iterations",
                             "vm_seconds", "paths")},
        "record_dir": result.record_dir,
    }


class Runs:
    """The runs this server is driving, by run ID (for ``stop_run``)."""

    def __init__(self, max_runs: int = 2) -> None:
        self.active: dict[str, Any] = {}
        self.starting = 0  # run-starting calls building their Converger
        self.max_runs = max_runs
        self.lock = threading.Lock()

    async def drive(self, conv: Any, ctx: Context) -> dict[str, Any]:
        """Run ``conv`` in a worker thread; stream its events as progress; stop it if
        the call is cancelled."""
        from antrieb.store.writer import describe

        inbox: queue.SimpleQueue = queue.SimpleQueue()

        def listen(event: events.Event) -> None:
            # runs go on side by side: only this run's scope is its progress
            if event.kind in _PROGRESS_KINDS and event.scope == conv.run_id:
                inbox.put(event)

        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = conv.run()
            except BaseException as exc:  # run() records its own end; this is a bug
                box["error"] = exc

        with self.lock:
            self.active[conv.run_id] = conv  # (already there when start() registered it)
        unsubscribe = events.subscribe(listen)
        thread = threading.Thread(target=work, name=f"antrieb-run-{conv.run_id}", daemon=True)
        count = 0

        async def flush() -> None:
            nonlocal count
            while True:
                try:
                    event = inbox.get_nowait()
                except queue.Empty:
                    return
                count += 1
                _, source, message = describe(event.model_dump(mode="json"))
                await ctx.report_progress(count, None, f"[{source}] {message}"[:500])

        try:
            thread.start()
            while thread.is_alive():
                await anyio.sleep(0.2)
                await flush()
            await flush()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                # stop() tears the cluster down: off the event loop, like the run itself
                await anyio.to_thread.run_sync(conv.stop, "cancelled by the MCP client")
                deadline = time.monotonic() + STOP_WAIT_S
                while thread.is_alive() and time.monotonic() < deadline:
                    await anyio.sleep(0.05)
            raise
        finally:
            unsubscribe()
            with self.lock:
                self.active.pop(conv.run_id, None)
        if "error" in box:
            raise ToolError(f"run {conv.run_id} crashed: {box['error']!r}")
        return result_summary(box["result"])


def _tool_error(exc: Exception) -> ToolError:
    if isinstance(exc, ValidationError):
        lines = [f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in exc.errors()]
        return ToolError("invalid task: " + "; ".join(lines))
    return ToolError(str(exc))


def add_run_tools(server: MCPServer, runs: Runs) -> None:
    """Register the run tools on ``server``."""

    async def start(make: Any, ctx: Context) -> dict[str, Any]:
        # Runs are scoped (events.scoped), so several go on at once; the limit is the
        # host's capacity (each run starts up to 4 VMs at a time).
        with runs.lock:
            busy = sorted(runs.active)
            if len(busy) + runs.starting >= runs.max_runs:
                raise ToolError(str(LimitError(
                    "ANTRIEB_MCP_MAX_RUNS", runs.max_runs,
                    f"{len(busy) + runs.starting} runs are in progress on this server "
                    f"({', '.join(busy) or 'starting'}); wait for one or stop it with "
                    f"stop_run")))
            runs.starting += 1
        registered = False
        try:
            try:
                # building a Converger validates input and opens the LLM provider: quick,
                # but it may touch disk, so off the loop too
                conv = await anyio.to_thread.run_sync(make)
            except (AntriebError, ValidationError, ValueError) as exc:
                raise _tool_error(exc) from None
            with runs.lock:
                runs.active[conv.run_id] = conv
                runs.starting -= 1
                registered = True
            return await runs.drive(conv, ctx)
        finally:
            if not registered:
                with runs.lock:
                    runs.starting -= 1

    @server.tool()
    async def converge(
        request: Annotated[str, Field(description="What to build, in words, e.g. 'HAProxy "
                                      "load balancing to 2 nginx backends'", min_length=1)],
        ctx: Context,
        max_nodes: Annotated[int, Field(ge=1, le=4, description="At most this many VMs")] = 4,
        tool: Literal["shell", "ansible"] = "shell",
        image: Annotated[str | None, Field(description="Image of every node")] = None,
        llm: Annotated[str | None, Field(description="LLM spec: openai, openai:MODEL, "
                                         "replay:PATH; default $ANTRIEB_LLM")] = None,
    ) -> dict[str, Any]:
        """Converge a task in words on fresh VM clusters with the configured LLM: design,
        attempts with retry/troubleshoot, one synthesized script proven on a fresh
        cluster. Returns the final script, every iteration and why each path was chosen."""
        from antrieb.converge import Converger, Task

        def make() -> Any:
            task = Task.model_validate({"request": request, "max_nodes": max_nodes,
                                        "tool": tool, "images": [image] if image else None})
            return Converger(task, provider=llm, meta={"via": "mcp"})

        return await start(make, ctx)

    @server.tool()
    async def deploy(
        nodes: Annotated[list[dict[str, str]], Field(
            description="The cluster: [{'name': 'web1', 'role': 'web', 'image': 'debian-12'}]"
                        ", 1 to 4 nodes")],
        checks: Annotated[list[dict[str, Any]], Field(
            description="Checks: {'name', 'node', 'command', 'expect': {'exit_status', "
                        "'stdout_regex'}} or {'name', 'node', 'host': {'kind': "
                        "'service_running'|'port_listening'|..., ...}}", min_length=1)],
        ctx: Context,
        scripts: Annotated[dict[str, str] | None, Field(
            description="Shell: one bash script per role")] = None,
        playbook: Annotated[str | None, Field(description="Ansible: the playbook")] = None,
        control: Annotated[str | None, Field(
            description="Ansible: the node that runs ansible-playbook")] = None,
        inventory: str | None = None,
        request: str = "Deploy this code as it is; fix only what it needs to pass the checks.",
        llm: str | None = None,
    ) -> dict[str, Any]:
        """Deploy your own code (scripts per role, or a playbook) on fresh VMs and run the
        checks; on failure the LLM fixes it. Returns findings: what had to change."""
        from antrieb.converge import Converger, Task

        def make() -> Any:
            if (scripts is None) == (playbook is None):
                raise ValueError("give either 'scripts' (shell) or 'playbook' (ansible)")
            artifacts: dict[str, Any] = (
                {"tool": "shell", "scripts": scripts} if scripts is not None else
                {"tool": "ansible", "playbook": playbook, "control": control or "",
                 "inventory": inventory})
            task = Task.model_validate({
                "name": "deploy", "request": request, "tool": artifacts["tool"],
                "topology": {"nodes": nodes}, "artifacts": artifacts, "checks": checks})
            return Converger(task, provider=llm, meta={"via": "mcp"})

        return await start(make, ctx)

    @server.tool()
    def list_examples() -> list[dict[str, Any]]:
        """The curated examples (each runs offline with a recorded model, on real VMs)."""
        from antrieb.examples import list_examples as examples

        return [e.summary() for e in examples()]

    @server.tool()
    async def run_example(
        name: Annotated[str, Field(description="An example name from list_examples")],
        ctx: Context,
    ) -> dict[str, Any]:
        """Run a curated example on real VMs with its recorded model; returns the result
        (converged, final script, iterations, decisions)."""
        from antrieb.examples import load_example

        return await start(lambda: load_example(name).converger(), ctx)

    @server.tool()
    def list_runs(limit: Annotated[int, Field(ge=1, le=500)] = 20) -> list[dict[str, Any]]:
        """Recorded runs from the run store, newest first: status, iterations, timings."""
        from antrieb import store

        try:
            rows = store.list_runs(limit)
        except AntriebError as exc:
            raise _tool_error(exc) from None
        with runs.lock:
            live = set(runs.active)
        for row in rows:
            row["in_progress_here"] = row["run_id"] in live
        return rows

    @server.tool()
    def get_run(run_id: str) -> dict[str, Any]:
        """One run: outcome, final script, iterations (the proof's gates on the verify
        ones: fresh_server, idempotent, reboot), failures, decisions with their reasons,
        steps, checks, residue, the troubleshoot transcript, LLM calls."""
        from antrieb import store

        try:
            return store.get_run(run_id)
        except AntriebError as exc:
            raise _tool_error(exc) from None

    @server.tool()
    async def stop_run(run_id: str) -> dict[str, Any]:
        """Stop a run this server is driving: its cluster goes down now, it ends as
        'stopped'."""
        with runs.lock:
            conv = runs.active.get(run_id)
            live = sorted(runs.active)
        if conv is None:
            raise ToolError(f"no run {run_id!r} in progress here; in progress: "
                            f"{', '.join(live) or 'none'}")
        t0 = time.monotonic()
        await anyio.to_thread.run_sync(conv.stop, "stopped with the MCP stop_run tool")
        return {"run_id": run_id, "stopping": True,
                "teardown_s": round(time.monotonic() - t0, 3)}

