"""Runs as a whole: replay a recorded run, benchmark an example.

Example::

    again = replay_run("r20261130-051200-ab12")
    again.status   # the recorded run's status, reached offline
    bench_example("nginx-lb")["overhead_ratio"]
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
