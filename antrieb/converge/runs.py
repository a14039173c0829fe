"""Runs as a whole: replay a recorded run, benchmark an example.

Example::

    again = replay_run("r20261130-051200-ab12")
    again.status   # the recorded run's status, reached offline
    bench_example("nginx-lb")["overhead_ratio"]
    bench_compare("nginx-lb")["speedup"]   # package layers + guest tuning vs neither
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from antrieb.converge.converger import Converger
from antrieb.converge.models import Budgets, Task
from antrieb.converge.record import load_run
from antrieb.converge.results import RunResult
from antrieb.errors import TaskError


def replay_run(run_id: str, **kwargs: Any) -> tuple[RunResult, dict[str, Any]]:
    """Run the recorded task again with its LLM recording as the model.

    ``run_id`` may also be a run folder's path (e.g. an example's shipped ``run/``).
    Returns the new result and the original record; the new run is recorded too,
    with ``replay_of`` naming the original.
    """
    from antrieb.llm import ReplayProvider

    record = load_run(run_id)
    recording = Path(record["dir"]) / "llm.jsonl"
    if not recording.exists():
        raise TaskError(str(recording), "this run has no LLM recording")
    task = Task.model_validate(record["task"])
    budgets = Budgets.model_validate(record.get("budgets") or {})
    conv = Converger(task, provider=ReplayProvider(recording), budgets=budgets,
                     meta={"replay_of": record.get("run_id", run_id)}, **kwargs)
    return conv.run(), record


def same_outcome(result: RunResult, record: dict[str, Any]) -> dict[str, Any]:
    """Compare a replay with the recorded run: status, paths, final artifacts."""
    original = record.get("result") or {}
    paths = [it["recovery"]["path"] for it in original.get("iterations") or []
             if it.get("recovery")]
    final = original.get("final")
    mine = result.final.model_dump(mode="json") if result.final is not None else None
    checks = {
        "status": (original.get("status"), result.status),
        "paths": (paths, result.paths()),
        "final": (final, mine),
    }
    return {"same": all(a == b for a, b in checks.values()),
            "differences": {k: {"recorded": a, "replayed": b}
                            for k, (a, b) in checks.items() if a != b}}


def warm_up(images: set[str]) -> None:
    """Build or load images and golden snapshots before the clock starts, as
    `antrieb bench cluster` does: a one-off cost, not part of a run's figures."""
    from antrieb.vm.driver import get_driver

    get_driver(None).prepare(images)


def bench_example(name: str, **kwargs: Any) -> dict[str, Any]:
    """Run a curated example offline and return its figures (one JSON-able dict)."""
    from antrieb.examples import load_example

    example = load_example(name)
    if "cluster_factory" not in kwargs and example.task.topology is not None:
        warm_up({n.image for n in example.task.topology.nodes})
    result = example.converger(**kwargs).run()
    figures = result.figures()
    figures["expected_paths"] = example.expected_paths
    figures["install_s"] = [round(it.timings.get("install_s", 0.0), 2)
                            for it in result.iterations]
    return figures


def _layer_events() -> tuple[list[dict[str, Any]], Any]:
    from antrieb import events

    seen: list[dict[str, Any]] = []

    def keep(e: events.Event) -> None:
        if isinstance(e, events.LayerChosen):
            seen.append({"iteration": e.iteration, "role": e.role, "outcome": e.outcome,
                         "packages": e.packages, "build_s": e.build_s, "reason": e.reason})
    return seen, events.subscribe(keep)


def bench_compare(name: str, *, cold: bool = True) -> dict[str, Any]:
    """The example twice in one invocation: as before (every attempt from the pristine
    golden, the guest's apt as the image has it), then with package layers and guest
    tuning; ``speedup`` is the first wall over the second. ``cold`` first removes the
    layers of the example's images, so the second run pays for the layers it makes."""
    from antrieb.examples import load_example
    from antrieb.vm import saved

    example = load_example(name)
    images = {n.image for n in example.task.topology.nodes} if example.task.topology else set()
    warm_up(images)
    removed = []
    if cold:
        for m in saved.list_saved():
            if m.get("kind") == "layer" and m.get("base") in images:
                saved.remove(m["name"])
                removed.append(m["name"])
    runs: dict[str, Any] = {}
    for label, on in (("before", False), ("layers_and_tuning", True)):
        seen, unsubscribe = _layer_events()
        try:
            result = example.converger(layers=on, tuned=on).run()
        finally:
            unsubscribe()
        install = [round(it.timings.get("install_s", 0.0), 2) for it in result.iterations]
        runs[label] = {
            "status": result.status, "converged": result.converged,
            "wall_s": round(result.timings.get("total_s", 0.0), 2), "install_s": install,
            "phases": [it.phase for it in result.iterations],
            "layer_hits": int(sum(it.timings.get("layer_hits", 0.0)
                                  for it in result.iterations)),
            "layers": seen, "run_id": result.run_id,
            "proof": result.proof.gates() if result.proof else None}
    before, after = runs["before"]["wall_s"], runs["layers_and_tuning"]["wall_s"]
    new = runs["layers_and_tuning"]["install_s"]
    return {"example": name, "cold": cold, "layers_removed_first": removed, **runs,
            "speedup": round(before / after, 3) if after else None,
            "iteration2_over_iteration1_install": round(new[1] / new[0], 3)
            if len(new) > 1 and new[0] else None}
