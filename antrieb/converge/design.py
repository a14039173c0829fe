"""The model's two writing steps around the loop: the design of a task that does not
bring its own topology, code and checks, and the synthesis of one clean script."""

from __future__ import annotations

from antrieb import events
from antrieb.converge.answers import DesignAnswer, SynthesisAnswer
from antrieb.converge.models import ArtifactsT
from antrieb.converge.results import Iteration
from antrieb.converge.session import Session
from antrieb.converge.troubleshoot import history


def design(run: Session) -> ArtifactsT:
    """The task's artifacts, with the topology and checks the model proposes for what
    the task leaves open."""
    task = run.task
    if task.topology is not None and task.artifacts is not None and task.checks:
        return task.artifacts
    from antrieb.converge.prompts import design_messages

    answer: DesignAnswer = run.ask(design_messages(task), DesignAnswer, "design")
    run.topology = task.topology or answer.topology
    run.checks = list(task.checks) or list(answer.checks)
    run.result.design_notes = answer.notes
    run._save()
    return task.artifacts or answer.artifacts


def synthesize(run: Session, artifacts: ArtifactsT, it: Iteration) -> ArtifactsT:
    """One clean version of the artifacts that passed, written from the run's history."""
    from antrieb.converge.prompts import synthesize_messages

    assert run.topology is not None
    answer: SynthesisAnswer = run.ask(
        synthesize_messages(run.task, artifacts, run.topology, run.checks,
                            history(run.result)), SynthesisAnswer, "synthesize", it)
    run.result.synthesis_notes = answer.notes
    events.emit(events.Synthesized(run_id=run.run_id, tool=answer.artifacts.tool,
                                   artifacts=answer.artifacts.texts(), notes=answer.notes))
    return answer.artifacts
