"""``antrieb tasks verify``: prove on fresh clusters that a task's checks mean something.

Three fresh clusters, one after the other, each torn down after use:

1. **untouched**: the checks run on nodes nothing was applied to (one attempt each). If
   every check passes there, the checks do not test the task: the task is *refused*
   (the runtime half of the rule; :mod:`antrieb.tasks.trivial` is the static half).
2. **reference**: applied, then every check must pass; with ``proof`` (the default) it
   must also pass what the engine's proof asks of a converged run: applied a second time
   with every check passing again (Ansible: ``changed=0``), then every node rebooted and
   every check passing again. The oracle scores 1.0 only on tasks whose reference does.
3. **near miss**: applied the same way; it must fail somewhere (the apply, a check, or
   a gate of the proof). Where it failed is recorded.

The engine's own code does the work (:func:`antrieb.converge.apply.apply_artifacts`,
:func:`antrieb.converge.checks.run_checks`, :func:`antrieb.converge.proof.idempotent`),
on clusters made by the engine's cluster factory. The verdict is appended to the task's
record (:mod:`antrieb.tasks.records`).

Example::

    v = verify_task(load_task("nginx-static"))
    v.result, v.reason, v.wall_s
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from antrieb.converge import proof as gates
from antrieb.converge.apply import apply_artifacts, prepare_nodes
from antrieb.converge.checks import run_checks
from antrieb.converge.models import ArtifactsT, Check, Topology
from antrieb.converge.results import CheckResult, Iteration, StepResult, tail
from antrieb.errors import AntriebError, TaskRefused
from antrieb.tasks.load import refusals
from antrieb.tasks.model import CatalogueTask
from antrieb.tasks.records import (
    CheckOutcome,
    Phase,
    StepOutcome,
    Trial,
    Verification,
    save_verification,
)

Factory = Callable[[Topology], Any]


def _factory() -> Factory:
    from antrieb.converge.converger import default_cluster_factory

    return default_cluster_factory


def _steps(steps: list[StepResult]) -> list[StepOutcome]:
    return [StepOutcome(node=s.node, artifact=s.artifact, exit_status=s.exit_status,
                        seconds=round(s.seconds, 2),
                        output_tail="" if s.ok else tail(s.output(), 800)) for s in steps]


def _checks(results: list[CheckResult]) -> list[CheckOutcome]:
    return [CheckOutcome(name=c.name, node=c.node, passed=c.passed, detail=c.detail[:300])
            for c in results]


def _all_pass(results: list[CheckResult], checks: list[Check]) -> bool:
    return len(results) == len(checks) and all(c.passed for c in results)


def run_trial(kind: str, topology: Topology, checks: list[Check],
              artifacts: ArtifactsT | None, *, proof: bool = True,
              factory: Factory | None = None, step_timeout: float = 900.0) -> Trial:
    """One fresh cluster: apply ``artifacts`` (None: nothing) and check, as described in
    the module docstring. Never raises for what the cluster does; a cluster that cannot
    be made or reached gives a trial with ``error``."""
    t0 = time.monotonic()
    cluster = (factory or _factory())(topology)
    trial = Trial(artifacts=kind, passed=False)  # type: ignore[arg-type]
    try:
        cluster.up()
        nodes = cluster.__getitem__
        if artifacts is None:
            once = [c.model_copy(update={"attempts": 1}) for c in checks]  # nothing settles
            results = run_checks(nodes, once)
            trial.checks, trial.passed = _checks(results), _all_pass(results, checks)
            trial.failed_at = None if trial.passed else "checks"
            return trial
        prepare_nodes(list(cluster.nodes))
        steps = apply_artifacts(nodes, topology, artifacts, timeout=step_timeout)
        trial.steps = _steps(steps)
        if not all(s.ok for s in steps):
            trial.failed_at = "apply"
            return trial
        results = run_checks(nodes, checks)
        trial.checks = _checks(results)
        if not _all_pass(results, checks):
            trial.failed_at = "checks"
            return trial
        if proof:
            trial.failed_at = _prove(cluster, topology, checks, artifacts, trial, step_timeout)
            if trial.failed_at is not None:
                return trial
        trial.passed = True
        return trial
    except AntriebError as exc:  # the platform failed, not the artifacts
        trial.error = f"{type(exc).__name__}: {exc}"[:2000]
        return trial
    finally:
        try:
            cluster.down()
        except Exception as exc:  # teardown must not hide the trial's outcome
            trial.error = trial.error or f"teardown: {type(exc).__name__}: {exc}"[:2000]
        trial.seconds = round(time.monotonic() - t0, 1)


def _prove(cluster: Any, topology: Topology, checks: list[Check], artifacts: ArtifactsT,
           trial: Trial, step_timeout: float) -> Phase | None:
    """The proof's gates after a first pass: applied again (every check passing, Ansible
    changing nothing), then every node rebooted and every check passing. Where it fails."""
    nodes = cluster.__getitem__
    it = Iteration(number=1, phase="verify", artifacts=artifacts)
    it.rerun_steps = apply_artifacts(nodes, topology, artifacts, timeout=step_timeout)
    if all(s.ok for s in it.rerun_steps):
        it.rerun_checks = run_checks(nodes, checks)
    idempotent = gates.idempotent(it, artifacts, len(checks))  # Ansible: changed=0 too
    trial.steps += _steps(it.rerun_steps)
    trial.checks = _checks(it.rerun_checks) or trial.checks
    if not idempotent:
        return "idempotence"
    cluster.reboot()
    results = run_checks(nodes, checks)
    trial.checks = _checks(results)
    return None if _all_pass(results, checks) else "reboot"


def verify_task(spec: CatalogueTask, *, proof: bool = True, factory: Factory | None = None,
                record: bool = True, on_trial: Callable[[Trial], None] | None = None
                ) -> Verification:
    """Untouched, reference, near miss (module docstring); the verdict, also appended to
    the task's record unless ``record=False``. A task the static rule refuses is refused
    at once, without any cluster."""
    static = refusals(spec)
    if factory is None and not static:
        _warm_up(spec)  # a one-off build of the images: not part of the wall time
    t0 = time.monotonic()
    if static:
        return _done(Verification(task=spec.name, result="refused", reason=str(
            TaskRefused(spec.name, static)), proof=proof), t0, record)
    assert spec.task.topology is not None
    topology, checks = spec.task.topology, list(spec.task.checks)
    v = Verification(task=spec.name, result="failed", reason="", proof=proof)
    for kind, artifacts in (("none", None), ("reference", spec.reference),
                            ("near_miss", spec.near_miss)):
        trial = run_trial(kind, topology, checks, artifacts, proof=proof, factory=factory)
        setattr(v, "untouched" if kind == "none" else kind, trial)
        if on_trial is not None:
            on_trial(trial)
        verdict = _verdict(v, trial)
        if verdict is not None:
            v.result, v.reason = verdict
            return _done(v, t0, record)
    v.result, v.reason = "passed", _passed_reason(v, len(checks))
    return _done(v, t0, record)


def _passed_reason(v: Verification, n_checks: int) -> str:
    assert v.untouched is not None and v.near_miss is not None
    near = v.near_miss
    where = {"apply": "in the apply", "idempotence": "when applied again",
             "reboot": "after the reboot",
             "checks": f"at {', '.join(near.failed_checks()[:3])}"}[near.failed_at or "checks"]
    failing = n_checks - sum(c.passed for c in v.untouched.checks)
    return (f"untouched nodes fail {failing} of {n_checks} checks; the reference passes every "
            f"check{' and the proof' if v.proof else ''}; the near miss fails {where}")


def _warm_up(spec: CatalogueTask) -> None:
    from antrieb.converge.runs import warm_up

    assert spec.task.topology is not None
    warm_up({n.image for n in spec.task.topology.nodes})


def _verdict(v: Verification, trial: Trial) -> tuple[str, str] | None:
    """The end of the verification after ``trial``, or None to go on."""
    if trial.error:
        return "error", f"the {trial.artifacts} trial could not run: {trial.error}"
    if trial.artifacts == "none" and trial.passed:
        return "refused", ("refused: every check passes on untouched nodes, so the checks "
                           "do not test the task")
    if trial.artifacts == "reference" and not trial.passed:
        steps = [f"{s.artifact} on {s.node} (exit {s.exit_status})" for s in trial.steps
                 if s.exit_status != 0]
        failed = trial.failed_checks() or steps
        return "failed", (f"the reference fails at {trial.failed_at}: "
                          f"{'; '.join(failed[:3]) or 'see the record'}")
    if trial.artifacts == "near_miss" and trial.passed:
        return "failed", "the near miss passes every check: the checks do not catch it"
    return None


def _done(v: Verification, t0: float, record: bool) -> Verification:
    v.wall_s = round(time.monotonic() - t0, 1)
    if record:
        save_verification(v)
    return v
