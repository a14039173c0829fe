"""Events of one run -> rows of the store, as they arrive.

The same :class:`RunWriter` serves the live run (the Converger hands it every event)
and the import of a recorded run (``events.jsonl`` read line by line), so both give
the same rows; rows are keyed by a digest of their event, so writing a run twice adds
nothing.

Events that carry no run (cluster, VM, command, LLM call events) belong to the run
whose writer sees them and to the iteration in progress (the last
``iteration_started``). ``llm_exchange`` events (prompts and answers) are never stored:
the run record keeps them; the store keeps model, tokens and latency only.

Example::

    writer = RunWriter(connect(), run_id, {"task": task_dict, "provider": "replay"})
    for event in events_of_the_run:
        writer.event(event)      # a pydantic Event or its JSON dict
    writer.finish("converged", result_dict)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from antrieb.store.db import Database

SKIPPED = {"llm_exchange", "image_build_progress"}  # prompts; build chatter of no run
_ITER_TIMINGS = ("cluster_up_s", "apply_s", "checks_s", "install_s", "troubleshoot_s",
                 "llm_s", "teardown_s", "iteration_s")


def secrets_to_hide() -> list[str]:
    """Values that must never reach the store, whatever a message quotes."""
    names = [n for n in os.environ if n.endswith(("_API_KEY", "_TOKEN", "_SECRET"))]
    return [v for n in names if len(v := os.environ[n]) >= 8]


def redact(text: Any, secrets: list[str]) -> Any:
    if isinstance(text, str):
        for s in secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
    return text


def event_id(event: dict[str, Any]) -> str:
    """A stable key of one event: the digest of its canonical JSON."""
    blob = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def run_row(run_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The ``runs`` row of a ``run.json`` (or of the Converger's task and meta)."""
    task = record.get("task") or {}
    result = record.get("result") or {}
    timings, cost = result.get("timings") or {}, result.get("cost") or {}
    state = record.get("state") or result.get("status") or "running"
    row: dict[str, Any] = {
        "run_id": run_id, "task_name": task.get("name"), "request": task.get("request"),
        "tool": task.get("tool"), "provider": record.get("provider"),
        "model": record.get("model"), "example": record.get("example"),
        "replay_of": record.get("replay_of"), "experiment_id": record.get("experiment_id"),
        "experiment_index": record.get("experiment_index"), "status": state,
        "created": record.get("created"), "updated": record.get("updated"),
        "task": task or None, "budgets": record.get("budgets"),
        "record_dir": record.get("dir") or result.get("record_dir"),
    }
    if result:
        row.update({
            "reason": result.get("reason") if state != "running" else None,
            "iterations": len(result.get("iterations") or []),
            "total_s": timings.get("total_s"), "in_vm_s": timings.get("in_vm_s"),
            "llm_s": timings.get("llm_s"), "cluster_up_s": timings.get("cluster_up_s"),
            "install_s": timings.get("install_s"), "vm_seconds": cost.get("vm_seconds"),
            "prompt_tokens": cost.get("prompt_tokens"),
            "completion_tokens": cost.get("completion_tokens"),
            "llm_calls": cost.get("llm_calls"),
            "final_artifacts": _texts(result.get("final")),
            "design_notes": result.get("design_notes") or None,
            "synthesis_notes": result.get("synthesis_notes") or None,
            "findings": result.get("findings") or None,
        })
    return row


def _texts(artifacts: dict[str, Any] | None) -> dict[str, str] | None:
    if not artifacts:
        return None
    if artifacts.get("tool") == "ansible":
        out = {"playbook": artifacts.get("playbook", "")}
        if artifacts.get("inventory"):
            out["inventory"] = artifacts["inventory"]
        return out
    return dict(artifacts.get("scripts") or {})


class RunWriter:
    """Writes one run. ``event()`` per event, ``finish()`` with the final result."""

    def __init__(self, db: Database, run_id: str, record: dict[str, Any]) -> None:
        self.db, self.run_id = db, run_id
        self.iteration: int | None = None
        self.secrets = secrets_to_hide()
        self.db.upsert("runs", self._clean(run_row(run_id, record)))

    def _clean(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: redact(v, self.secrets) for k, v in row.items()}

    def _put(self, table: str, ev: dict[str, Any], eid: str, **cols: Any) -> None:
        row = {"event_id": eid, "run_id": self.run_id, "iteration": self.iteration,
               "at": ev.get("at"), **cols}
        self.db.upsert(table, self._clean(row))

    def event(self, event: Any) -> None:
        ev: dict[str, Any] = event if isinstance(event, dict) else event.model_dump(mode="json")
        kind = ev.get("kind", "")
        if kind in SKIPPED:
            return
        if ev.get("run_id") not in (None, self.run_id):
            return  # another run's event, seen on the shared stream
        if "iteration" in ev and kind != "run_finished":
            self.iteration = ev["iteration"]
        eid = event_id(ev)
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(ev, eid)
        level, source, message = describe(ev)
        self._put("logs", ev, eid, kind=kind, level=level, source=source, message=message)

    # -- one handler per event kind that has a table ----------------------------------

    def _on_run_started(self, ev: dict[str, Any], eid: str) -> None:
        self.db.upsert("runs", self._clean({
            "run_id": self.run_id, "task_name": ev.get("task_name"),
            "request": ev.get("request"), "tool": ev.get("tool"),
            "provider": ev.get("provider"), "model": ev.get("model"),
            "created": ev.get("at"), "status": "running"}))

    def _on_iteration_started(self, ev: dict[str, Any], eid: str) -> None:
        self.db.upsert("iterations", {
            "run_id": self.run_id, "iteration": ev["iteration"], "phase": ev.get("phase"),
            "started": ev.get("at"), "nodes": ev.get("nodes") or {}})

    def _on_iteration_finished(self, ev: dict[str, Any], eid: str) -> None:
        t = ev.get("timings") or {}
        self.db.upsert("iterations", {
            "run_id": self.run_id, "iteration": ev["iteration"], "phase": ev.get("phase"),
            "passed": bool(ev.get("passed")), "finished": ev.get("at"), "timings": t,
            **{k: t.get(k) for k in _ITER_TIMINGS}})

    def _on_step_finished(self, ev: dict[str, Any], eid: str) -> None:
        self._put("steps", ev, eid, node=ev.get("node"), role=ev.get("role"),
                  command=ev.get("artifact"), exit_status=ev.get("exit_status"),
                  ok=ev.get("exit_status") == 0 and not ev.get("timed_out"),
                  output=ev.get("output_tail"), seconds=ev.get("seconds"),
                  install_s=ev.get("install_s"), timed_out=bool(ev.get("timed_out")),
                  changed=ev.get("changed"))

    def _on_command_finished(self, ev: dict[str, Any], eid: str) -> None:
        self._put("commands", ev, eid, cluster=ev.get("cluster"), node=ev.get("node"),
                  command=ev.get("command"), exit_status=ev.get("exit_status"),
                  seconds=ev.get("seconds"), truncated=bool(ev.get("truncated")),
                  timed_out=bool(ev.get("timed_out")))

    def _on_check_finished(self, ev: dict[str, Any], eid: str) -> None:
        name = ev.get("check") or ""
        bare = name.removeprefix("rerun:").removeprefix("reboot:")
        # the column is newer than the table: named only where it says something
        reboot = {"after_reboot": True} if name.startswith("reboot:") else {}
        self._put("checks", ev, eid, name=bare, node=ev.get("node"),
                  rerun=name.startswith("rerun:"), **reboot, passed=bool(ev.get("passed")),
                  detail=ev.get("detail"), output=ev.get("output_tail"),
                  seconds=ev.get("seconds"))

    def _on_proof_finished(self, ev: dict[str, Any], eid: str) -> None:
        reboot_s = ev.get("reboot_s") or {}
        self.db.upsert("iterations", {
            "run_id": self.run_id, "iteration": ev["iteration"],
            "fresh_server": bool(ev.get("fresh_server")),
            "idempotent": None if ev.get("idempotent") is None else bool(ev["idempotent"]),
            "reboot": ev.get("reboot"),
            "reboot_s": max(reboot_s.values()) if reboot_s else None})
        for r in ev.get("residue") or []:
            self.db.upsert("residue", self._clean({
                "event_id": eid, "run_id": self.run_id, "iteration": ev["iteration"],
                "at": ev.get("at"), "node": r.get("node"), "kind": r.get("kind"),
                "item": r.get("item"), "detail": r.get("detail")}))

    def _on_failure_diagnosed(self, ev: dict[str, Any], eid: str) -> None:
        self._put("failures", ev, eid, failure_class=ev.get("failure_class"),
                  node=ev.get("node"), summary=ev.get("summary"),
                  evidence=ev.get("evidence") or [])

    def _on_recovery_chosen(self, ev: dict[str, Any], eid: str) -> None:
        # classified_by (schema 3) only when the event has it: runs recorded before it
        # existed still go into a store that does not have the column yet
        extra = {"classified_by": ev["classified_by"]} if ev.get("classified_by") else {}
        self._put("recovery_decisions", ev, eid, path=ev.get("path"),
                  failure_class=ev.get("failure_class"), reason=ev.get("reason"),
                  evidence=ev.get("evidence") or [], **extra)

    def _on_llm_call_finished(self, ev: dict[str, Any], eid: str) -> None:
        # model, tokens, latency: no prompt, no answer, no error text (it is free text)
        self._put("llm_calls", ev, eid, call_id=ev.get("call_id"), purpose=ev.get("purpose"),
                  provider=ev.get("provider"), model=ev.get("model"),
                  attempt=ev.get("attempt"), ok=bool(ev.get("ok")),
                  prompt_tokens=ev.get("prompt_tokens"),
                  completion_tokens=ev.get("completion_tokens"), seconds=ev.get("seconds"))

    def _on_troubleshoot_turn(self, ev: dict[str, Any], eid: str) -> None:
        self._put("troubleshoot_turns", ev, eid, turn=ev.get("turn"), node=ev.get("node"),
                  command=ev.get("command"), why=ev.get("why"),
                  exit_status=ev.get("exit_status"), output=ev.get("output_tail"),
                  seconds=ev.get("seconds"))

    def _on_synthesized(self, ev: dict[str, Any], eid: str) -> None:
        self.db.upsert("runs", self._clean({
            "run_id": self.run_id, "final_artifacts": ev.get("artifacts") or None,
            "synthesis_notes": ev.get("notes") or None}))

    def _on_run_finished(self, ev: dict[str, Any], eid: str) -> None:
        self.db.upsert("runs", self._clean({
            "run_id": self.run_id, "status": ev.get("status"), "reason": ev.get("reason"),
            "iterations": ev.get("iterations"), "total_s": ev.get("seconds"),
            "finished": ev.get("at"), "updated": ev.get("at")}))

    # -- the end ----------------------------------------------------------------------

    def finish(self, record: dict[str, Any]) -> None:
        """Complete the run from its final ``run.json`` body: cost, timings, the proven
        artifacts, and what only the result knows (each iteration's explanation)."""
        row = run_row(self.run_id, record)
        row.setdefault("updated", time.time())
        self.db.upsert("runs", self._clean(row))
        for it in (record.get("result") or {}).get("iterations") or []:
            t = it.get("timings") or {}
            self.db.upsert("iterations", self._clean({
                "run_id": self.run_id, "iteration": it.get("number"),
                "phase": it.get("phase"), "passed": bool(it.get("passed")),
                "explanation": it.get("explanation") or None,
                "timings": {k: v for k, v in t.items() if not k.startswith("_")},
                **{k: t.get(k) for k in _ITER_TIMINGS}}))


def describe(ev: dict[str, Any]) -> tuple[str, str, str]:
    """One log line of an event: (level, source, message)."""
    k = ev.get("kind", "")
    g = ev.get
    if k == "run_started":
        return "info", "run", f"run {g('run_id')} of {g('task_name')} ({g('tool')}, " \
                              f"{g('provider')}:{g('model')})"
    if k == "iteration_started":
        nodes = ", ".join(f"{n}={r}" for n, r in (g("nodes") or {}).items())
        return "info", "run", f"iteration {g('iteration')} ({g('phase')}) on a fresh " \
                              f"cluster: {nodes}"
    if k == "cluster_state":
        detail = f": {g('detail')}" if g("detail") else ""
        level = "error" if g("state") == "failed" else "info"
        return level, str(g("cluster")), f"cluster {g('state')}{detail}"
    if k == "vm_state":
        level = "error" if g("state") == "failed" else "info"
        return level, str(g("node")), f"vm {g('state')} {g('ip') or ''} {g('detail')}".strip()
    if k == "cluster_ready":
        return "info", str(g("cluster")), f"cluster ready in {g('seconds', 0):.2f}s " \
                                          f"({g('driver')}, {g('accel')})"
    if k == "command_finished":
        level = "info" if g("exit_status") == 0 else "warning"
        return level, str(g("node")), f"$ {_line(g('command'))} -> exit {g('exit_status')} " \
                                      f"({g('seconds', 0):.1f}s)"
    if k == "step_finished":
        level = "info" if g("exit_status") == 0 else "error"
        return level, str(g("node")), f"{g('artifact')}: exit {g('exit_status')} " \
                                      f"({g('seconds', 0):.1f}s, installs " \
                                      f"{g('install_s', 0):.1f}s)"
    if k == "proof_finished":
        level = "info" if g("passed") else "error"
        return level, "run", (f"proof: fresh server {g('fresh_server')}, idempotent "
                              f"{g('idempotent')}, reboot {g('reboot')}, residue "
                              f"{len(g('residue') or [])}")
    if k == "check_finished":
        verdict = "pass" if g("passed") else f"FAIL {g('detail')}"
        return "info" if g("passed") else "error", str(g("node")), \
            f"check {g('check')!r}: {verdict}"
    if k == "failure_diagnosed":
        return "error", str(g("node") or "diagnosis"), f"{g('failure_class')}: {g('summary')}"
    if k == "recovery_chosen":
        return "warning", "recovery", f"path {g('path')}: {g('reason')}"
    if k == "troubleshoot_turn":
        return "info", str(g("node")), f"troubleshoot {g('turn')}: $ {_line(g('command'))} " \
                                       f"-> exit {g('exit_status')}"
    if k == "llm_call_finished":
        ok = "ok" if g("ok") else "unusable answer"
        return "info" if g("ok") else "warning", "llm", \
            f"{g('purpose')} attempt {g('attempt')}: {ok}, " \
            f"{g('prompt_tokens', 0)}+{g('completion_tokens', 0)} tokens, {g('seconds', 0):.1f}s"
    if k == "synthesized":
        return "info", "synthesis", f"synthesized {', '.join(g('artifacts') or {})}"
    if k == "iteration_finished":
        return "info", "run", f"iteration {g('iteration')} " \
                              f"{'passed' if g('passed') else 'failed'}"
    if k == "run_finished":
        level = "info" if g("status") == "converged" else "error"
        return level, "run", f"{g('status')} after {g('iterations')} iteration(s): {g('reason')}"
    if k == "image_built":
        return "info", "images", f"image {g('image')} " + (
            "cached" if g("cached") else f"built in {g('seconds', 0):.0f}s")
    if k == "golden_snapshot_ready":
        return "info", "images", f"golden snapshot of {g('image')} " + (
            "cached" if g("cached") else f"made in {g('seconds', 0):.1f}s")
    return "info", k, json.dumps({x: y for x, y in ev.items() if x not in ("kind", "at")},
                                 default=str)[:500]


def _line(text: Any, limit: int = 300) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[:limit] + " [...]"
