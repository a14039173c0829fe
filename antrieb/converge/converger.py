"""The convergence loop: design, attempts on fresh clusters, recovery, synthesis, proof.

::

    design      the model proposes what the task leaves open (topology, artifacts, checks)
    attempt N   fresh cluster -> apply -> checks
                fail -> diagnose -> retry (code + logs -> new code)
                                  | troubleshoot (live cluster, one command a turn -> fix)
    synthesize  one clean script per role (or one playbook) from what worked
    verify      fresh cluster -> apply -> checks -> apply again -> checks  => converged

Budgets (iterations, wall time, tokens) and :meth:`Converger.stop` end a run with a
status and a reason, never with an exception; the cluster in use is torn down at once.

Example::

    from antrieb.converge import Converger, Task

    result = Converger(Task(request="nginx serving 'hi' on one node"),
                       provider="openai").run()
    print(result.status, result.reason, result.figures())
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from antrieb import config, events
from antrieb.converge import apply as applying
from antrieb.converge import proof
from antrieb.converge.answers import Fix
from antrieb.converge.checks import run_checks
from antrieb.converge.design import design, synthesize
from antrieb.converge.layers import Layers, with_images
from antrieb.converge.models import ArtifactsT, Budgets, Check, Task, Topology, constrained
from antrieb.converge.record import RunRecorder, experiment_meta, new_run_id
from antrieb.converge.results import Iteration, RunResult, Status, tail
from antrieb.converge.troubleshoot import diagnose_iteration, recover
from antrieb.errors import AntriebError, LLMError, LLMOutputError, LLMUnavailable, ReplayMismatch
from antrieb.llm import Message, Provider, RecordingProvider, ask, get_provider


class _Halted(Exception):
    """Raised at the next checkpoint after stop(), a budget or Ctrl-C."""


def default_cluster_factory(topology: Topology) -> Any:
    from antrieb.cluster import Cluster

    return Cluster(nodes=[n.model_dump() for n in topology.nodes])


# layers are saved real VMs: they go with this factory, never with a stand-in for it (a
# test's in-memory twin put in its place, or a factory passed in)
default_cluster_factory.makes_real_vms = True  # type: ignore[attr-defined]


class Converger:
    """One convergence run of ``task``. ``run()`` once; ``stop()`` from any thread.

    ``provider`` is a :class:`~antrieb.llm.Provider` or a spec (``"openai"``,
    ``"replay:PATH"``); ``cluster_factory(topology)`` makes an un-started cluster
    (the default makes real VMs; unit tests pass an in-memory twin).

    Example::

        conv = Converger(task, provider="replay:antrieb/examples/nginx-lb/conversation.yaml")
        threading.Timer(60, conv.stop).start()
        conv.run().status   # "converged", or "stopped" if the timer won
    """

    def __init__(self, task: Task, *, provider: Provider | str | None = None,
                 budgets: Budgets | None = None,
                 cluster_factory: Callable[[Topology], Any] | None = None,
                 record: bool = True, run_id: str | None = None,
                 meta: dict[str, Any] | None = None, layers: bool | None = None,
                 tuned: bool | None = None) -> None:
        self.task = task
        self.budgets = budgets or Budgets()
        self.run_id = run_id or new_run_id()
        inner = provider if provider is not None and not isinstance(provider, str) \
            else get_provider(provider)
        # made here from a spec: ours to close when the run ends (its HTTP connections)
        self._own_provider = inner if inner is not provider else None
        self.recorder: RunRecorder | None = None
        self.store: Any = None  # antrieb.store.LiveWriter: rows as events arrive
        if record:
            self.recorder = RunRecorder(
                self.run_id, task.model_dump(mode="json"),
                {"budgets": self.budgets.model_dump(), "provider": inner.name,
                 "model": inner.model, **experiment_meta(), **(meta or {})})
            from antrieb.store import LiveWriter  # never raises: a failing store is skipped

            self.store = LiveWriter(self.run_id, {**self.recorder.base(), "state": "running"})
            self.provider: Provider = RecordingProvider(inner, self.recorder.llm_path)
        else:
            self.provider = inner
        self.cluster_factory = cluster_factory or default_cluster_factory
        self.layers = Layers(self.run_id, enabled=getattr(
            self.cluster_factory, "makes_real_vms", False) and (
            config.flag("layers") if layers is None else layers))
        self.tuned = config.flag("guest_tuning") if tuned is None else tuned
        self.result = RunResult(run_id=self.run_id, task_name=task.name, status="failed",
                                reason="not finished", record_dir=str(self.recorder.dir)
                                if self.recorder else None)
        self.topology: Topology | None = task.topology
        self.checks: list[Check] = list(task.checks)
        self._cluster: Any = None
        self._cluster_lock = threading.Lock()
        self._halt: tuple[Status, str] | None = None
        self._halt_lock = threading.Lock()
        self._started = 0.0
        self._llm_s = 0.0
        self._tokens = 0

    # -- stopping ---------------------------------------------------------------------

    def stop(self, reason: str = "stopped by the user") -> None:
        """End the run: the cluster in use goes down now; ``run()`` returns ``stopped``."""
        self._trip("stopped", reason)

    def _trip(self, status: Status, reason: str) -> None:
        with self._halt_lock:
            if self._halt is None:
                self._halt = (status, reason)
        self._teardown()

    def _checkpoint(self) -> None:
        if self._halt is None:
            elapsed = time.monotonic() - self._started
            if elapsed > self.budgets.max_wall_s:
                self._trip("budget_exhausted", f"wall-time budget of "
                           f"{self.budgets.max_wall_s:.0f}s used up ({elapsed:.0f}s)")
            elif self._tokens > self.budgets.max_tokens:
                self._trip("budget_exhausted", f"token budget of {self.budgets.max_tokens} "
                           f"used up ({self._tokens} tokens)")
        if self._halt is not None:
            raise _Halted

    def _halted(self) -> bool:
        return self._halt is not None

    # -- bookkeeping ------------------------------------------------------------------

    def _on_event(self, event: events.Event) -> None:
        if event.scope is not None and event.scope != self.run_id:
            return  # another run's work in this process
        if self.recorder is not None:
            self.recorder.event(event)
        if self.store is not None:
            self.store.event(event)
        if isinstance(event, events.LLMCallFinished):
            self._tokens += event.prompt_tokens + event.completion_tokens
            self.result.cost.add_call(event.prompt_tokens, event.completion_tokens,
                                      event.tokens_measured)

    def _save(self, state: str = "running") -> None:
        if self.recorder is not None:
            self.recorder.write(state, self.result.model_dump(mode="json"))

    def ask(self, messages: list[Message], schema: Any, purpose: str,
            iteration: Iteration | None = None) -> Any:
        """Ask the model (validated against the task), timed, budget-checked."""
        self._checkpoint()
        t0 = time.monotonic()
        topo = self.topology
        try:
            with constrained(self.task.constraints(topo)):
                return ask(self.provider, messages, schema, purpose=purpose)
        finally:
            spent = time.monotonic() - t0
            self._llm_s += spent
            if iteration is not None:
                iteration.timings["llm_s"] = iteration.timings.get("llm_s", 0.0) + spent
            self._save()
            self._checkpoint()

    # -- clusters ---------------------------------------------------------------------

    def _up(self, it: Iteration, images: dict[str, str] | None = None) -> Any:
        assert self.topology is not None
        cluster = self.cluster_factory(with_images(self.topology, images or {}))
        with self._cluster_lock:
            self._cluster = cluster
        self._checkpoint()
        t0 = time.monotonic()
        cluster.up()
        it.timings["cluster_up_s"] = time.monotonic() - t0
        it.timings["_up_at"] = time.monotonic()
        self._checkpoint()
        t1 = time.monotonic()
        applying.prepare_nodes(list(cluster.nodes), tuned=self.tuned)
        it.timings["prepare_s"] = time.monotonic() - t1
        return cluster

    def _teardown(self, it: Iteration | None = None) -> None:
        with self._cluster_lock:
            cluster, self._cluster = self._cluster, None
        if cluster is None:
            return
        t0 = time.monotonic()
        try:
            with events.scoped(self.run_id):  # also when stop() comes from another thread
                cluster.down()
        except Exception as exc:  # teardown must never hide why the run ended
            events.emit(events.ClusterStateChanged(
                cluster=getattr(cluster, "id", "?"), state=events.ClusterState.FAILED,
                detail=f"teardown: {exc}"))
        if it is not None:
            it.timings["teardown_s"] = time.monotonic() - t0
            up_at = it.timings.pop("_up_at", None)
            if up_at is not None:
                self.result.cost.vm_seconds += len(cluster.nodes) * (time.monotonic() - up_at)

    # -- the run ----------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end; returns the result whatever happened (never raises for the
        run's own outcome; Ctrl-C is recorded as ``stopped``)."""
        with events.scoped(self.run_id):
            return self._run_scoped()

    def _run_scoped(self) -> RunResult:
        self._started = time.monotonic()
        unsubscribe = events.subscribe(self._on_event)
        timer = threading.Timer(self.budgets.max_wall_s, lambda: self._trip(
            "budget_exhausted", f"wall-time budget of {self.budgets.max_wall_s:.0f}s used up"))
        timer.daemon = True
        timer.start()
        events.emit(events.RunStarted(
            run_id=self.run_id, task_name=self.task.name, request=self.task.request,
            tool=self.task.tool, provider=self.provider.name, model=self.provider.model,
            budgets={k: float(v) for k, v in self.budgets.model_dump().items()}))
        status: Status = "failed"
        reason = ""
        try:
            status, reason = self._run()
        except _Halted:
            pass
        except KeyboardInterrupt:
            self._trip("stopped", "interrupted (Ctrl-C)")
        except LLMOutputError as exc:
            status, reason = "failed", (f"the model gave no usable answer for {exc.purpose!r} "
                                        f"after {exc.attempts} attempts: {exc.last_error}")
        except ReplayMismatch as exc:
            status, reason = "failed", f"the replayed recording does not match: {exc}"
        except LLMUnavailable as exc:
            status, reason = "failed", f"the model is unavailable: {exc.reason}"
        except LLMError as exc:
            status, reason = "failed", f"the model call failed: {exc}"
        except AntriebError as exc:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: still a recorded end, with the traceback
            status, reason = "failed", f"internal error {type(exc).__name__}: {exc}"
            self.result.findings.append(traceback.format_exc()[-4000:])
        finally:
            timer.cancel()
            if self._halt is not None:
                status, reason = self._halt
            self._teardown(self.result.iterations[-1] if self.result.iterations else None)
            self._finish(status, reason)
            unsubscribe()
            close = getattr(self._own_provider, "close", None)
            if close is not None:
                close()
        return self.result

    def _finish(self, status: Status, reason: str) -> None:
        r = self.result
        r.status, r.reason = status, reason
        in_vm = 0.0
        for it in r.iterations:
            in_vm += sum(it.timings.get(k, 0.0) for k in
                         ("apply_s", "checks_s", "rerun_apply_s", "rerun_checks_s",
                          "troubleshoot_s"))
        r.timings.update({
            "total_s": time.monotonic() - self._started,
            "in_vm_s": in_vm,
            "llm_s": self._llm_s,
            "cluster_up_s": sum(it.timings.get("cluster_up_s", 0.0) for it in r.iterations),
            "teardown_s": sum(it.timings.get("teardown_s", 0.0) for it in r.iterations),
            "install_s": sum(it.timings.get("install_s", 0.0) for it in r.iterations),
        })
        r.timings.update(self.layers.finish(r.iterations))
        events.emit(events.RunFinished(run_id=self.run_id, status=status, reason=reason,
                                       iterations=len(r.iterations),
                                       seconds=r.timings["total_s"]))
        self._save(status)
        if self.recorder is not None:
            self.recorder.close()
        if self.store is not None and self.recorder is not None:
            self.store.finish({**self.recorder.base(), "state": status,
                               "result": self.result.model_dump(mode="json")})

    def _run(self) -> tuple[Status, str]:
        artifacts = design(self)
        phase = "attempt"
        exhausted = f"iteration budget of {self.budgets.max_iterations} used up"
        while True:
            if len(self.result.iterations) >= self.budgets.max_iterations:
                return "budget_exhausted", exhausted
            it = self._iterate(phase, artifacts)
            if it.passed:
                self._teardown(it)
                self._save()
                if phase == "verify":
                    self.result.final = artifacts
                    return "converged", (f"the synthesized artifacts passed every check on a "
                                         f"fresh server cluster, again when re-applied, and "
                                         f"again after every node rebooted "
                                         f"(iteration {it.number})")
                artifacts, phase = synthesize(self, artifacts, it), "verify"
                continue
            if len(self.result.iterations) >= self.budgets.max_iterations:
                diagnose_iteration(self, it)  # for the record; no iteration left to fix it
                return "budget_exhausted", exhausted
            artifacts = recover(self, it, artifacts)
            phase = "attempt"

    def _iterate(self, phase: str, artifacts: ArtifactsT) -> Iteration:
        assert self.topology is not None
        it = Iteration(number=len(self.result.iterations) + 1, phase=phase,  # type: ignore[arg-type]
                       artifacts=artifacts)
        self.result.iterations.append(it)
        events.emit(events.IterationStarted(
            run_id=self.run_id, iteration=it.number, phase=phase,
            nodes={n.name: n.role for n in self.topology.nodes}))
        t0 = time.monotonic()
        images: dict[str, str] = {}
        if phase == "attempt":  # the proof always starts from the pristine golden
            images, build_s = self.layers.images(it.number, self.topology, artifacts)
            if self.layers.enabled:
                it.timings.update(layer_hits=float(len(images)), layer_build_s=build_s)
        cluster = self._up(it, images)
        if phase == "verify":
            proof.baseline(cluster)  # what a fresh node holds, before any script ran
        it.steps, it.checks, apply_s, checks_s, install_s = self._apply_and_check(
            cluster, artifacts, it)
        it.timings.update(apply_s=apply_s, checks_s=checks_s, install_s=install_s)
        if phase == "attempt" and self.layers.enabled:
            self.layers.observe_cluster(cluster, it, self.result.iterations[:-1],
                                        layered=bool(images))
        it.passed = all(s.ok for s in it.steps) and bool(it.checks) and all(
            c.passed for c in it.checks) and len(it.checks) == len(self.checks)
        if phase == "verify":
            self.result.proof = proof.prove(self, cluster, artifacts, it,
                                            self._apply_and_check, self._run_checks)
        it.timings["iteration_s"] = time.monotonic() - t0
        events.emit(events.IterationFinished(
            run_id=self.run_id, iteration=it.number, phase=phase, passed=it.passed,
            timings={k: v for k, v in it.timings.items() if not k.startswith("_")}))
        self._save()
        return it

    def _apply_and_check(self, cluster: Any, artifacts: ArtifactsT, it: Iteration,
                         rerun: bool = False) -> tuple[list, list, float, float, float]:
        assert self.topology is not None
        label = "rerun:" if rerun else ""

        def on_step(step: Any) -> None:
            events.emit(events.StepFinished(
                run_id=self.run_id, iteration=it.number, node=step.node, role=step.role,
                artifact=label + step.artifact, exit_status=step.exit_status,
                output_tail=tail(step.output(), 2000), seconds=step.seconds,
                install_s=step.install_s, timed_out=step.timed_out, changed=step.changed))

        t0 = time.monotonic()
        steps = applying.apply_artifacts(cluster.__getitem__, self.topology, artifacts,
                                         on_step=on_step, stopped=self._halted,
                                         timeout=self.budgets.step_timeout_s)
        apply_s = time.monotonic() - t0
        install_s = applying.critical_install_s(steps, self.topology, artifacts)
        self._save()
        self._checkpoint()
        checks: list = []
        t1 = time.monotonic()
        if all(s.ok for s in steps):
            checks = self._run_checks(cluster, it, label)
        checks_s = time.monotonic() - t1
        self._save()
        self._checkpoint()
        return steps, checks, apply_s, checks_s, install_s

    def _run_checks(self, cluster: Any, it: Iteration, label: str = "") -> list:
        def on_check(c: Any) -> None:
            events.emit(events.CheckFinished(
                run_id=self.run_id, iteration=it.number, check=label + c.name,
                node=c.node, passed=c.passed, detail=c.detail,
                output_tail=tail((c.stdout + c.stderr).strip(), 1000), seconds=c.seconds))

        return run_checks(cluster.__getitem__, self.checks, on_result=on_check,
                          stopped=self._halted)

__all__ = ["Budgets", "Converger", "Fix", "default_cluster_factory"]
