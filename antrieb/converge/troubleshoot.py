"""Recovery after a failed iteration: diagnose, choose the path, and walk it.

- retry: the failed cluster goes down; the model gets the code and the logs and
  answers with corrected artifacts.
- troubleshoot: on the live failed cluster the model asks for one command at a time
  (bounded turns) and ends with a fix to the artifacts; then the cluster goes down.

Example::

    artifacts = recover(converger, failed_iteration, artifacts)
"""

from __future__ import annotations

import json
from typing import Any

from antrieb import events
from antrieb.converge import prompts
from antrieb.converge.answers import Fix, RetryAnswer, RunCommand, TroubleshootAnswer
from antrieb.converge.diagnose import choose_path, diagnose
from antrieb.converge.diagnosis.model import classify_unknown
from antrieb.converge.models import ArtifactsT
from antrieb.converge.proof import diagnose_proof
from antrieb.converge.results import (
    Diagnosis,
    Iteration,
    RunResult,
    TroubleshootExchange,
    tail,
)
from antrieb.converge.session import Session
from antrieb.llm import Message

COMMAND_TIMEOUT_S = 60.0


def _evidence(it: Iteration) -> tuple[list, list]:
    steps = it.steps + it.rerun_steps
    checks = it.reboot_checks or (it.rerun_checks if it.rerun_steps else it.checks)
    return steps, checks


def diagnose_iteration(conv: Session, it: Iteration, *, ask_model: bool = False) -> Diagnosis:
    """Diagnose a failed iteration, record and announce it; with ``ask_model`` what the
    rules leave ``unknown`` goes to the model once (:mod:`.diagnosis.model`). A failed
    proof gate (reboot, strict residue) is diagnosed from the gate (:mod:`.proof`)."""
    d = diagnose_proof(it)
    if d is None:
        d = diagnose(*_evidence(it))
        if ask_model:
            d = classify_unknown(lambda m, schema, purpose: conv.ask(m, schema, purpose, it),
                                 d, *_evidence(it))
    it.diagnosis = d
    events.emit(events.FailureDiagnosed(run_id=conv.run_id, iteration=it.number,
                                        failure_class=d.failure_class, node=d.node,
                                        summary=d.summary, evidence=d.evidence))
    conv._save()
    return d


def recover(conv: Session, it: Iteration, artifacts: ArtifactsT) -> ArtifactsT:
    """Diagnose ``it``, record the decision, and return the corrected artifacts."""
    steps, checks = _evidence(it)
    d = diagnose_iteration(conv, it, ask_model=True)
    previous = [i.recovery for i in conv.result.iterations if i.recovery is not None]
    live = conv._cluster is not None
    rec = choose_path(d, previous, troubleshoot_available=live)
    it.recovery = rec
    events.emit(events.RecoveryChosen(run_id=conv.run_id, iteration=it.number, path=rec.path,
                                      reason=rec.reason, failure_class=rec.failure_class,
                                      evidence=d.evidence, classified_by=rec.classified_by))
    conv._save()
    assert conv.topology is not None
    if rec.path == "rerun":  # the platform failed, not the code: same code, fresh cluster
        conv._teardown(it)
        _finding(conv, it)
        return artifacts
    report = prompts.failure_report(d, steps, checks)
    if rec.path == "retry":
        conv._teardown(it)
        messages = prompts.retry_messages(conv.task, artifacts, conv.topology, conv.checks,
                                          report)
        answer = retry_answer(conv, messages, it)
        it.explanation = answer.explanation
        _finding(conv, it)
        return answer.artifacts
    try:
        fixed = _troubleshoot(conv, it, artifacts, report)
    finally:
        conv._teardown(it)
    _finding(conv, it)
    return fixed


def _finding(conv: Session, it: Iteration) -> None:
    d = it.diagnosis
    if d is None:
        return
    fix = f"; fixed: {it.explanation}" if it.explanation else ""
    conv.result.findings.append(f"iteration {it.number}: {d.failure_class}: {d.summary}{fix}")


def _troubleshoot(conv: Session, it: Iteration, artifacts: ArtifactsT,
                  report: str) -> ArtifactsT:
    assert conv.topology is not None
    turns = conv.budgets.troubleshoot_turns
    messages = prompts.troubleshoot_messages(conv.task, artifacts, conv.topology, conv.checks,
                                             report, turns)
    for turn in range(1, turns + 2):
        answer = fix_answer(conv, messages, it)
        if isinstance(answer, Fix):
            it.explanation = answer.explanation
            return answer.artifacts
        assert isinstance(answer, RunCommand)
        if turn > turns:
            break
        ex = _run_command(conv, it, turn, answer)
        left = turns - turn
        messages = [*messages,
                    Message(role="assistant", content=answer.model_dump_json()),
                    prompts.command_output_message(ex.node, ex.command, ex.exit_status,
                                                   ex.output, left)]
        if left == 0:
            messages[-1] = Message(role="user", content=messages[-1].content + (
                "\nNo commands left: answer now with "
                + json.dumps({"action": "fix", "explanation": "...", "artifacts": "{...}"})))
    # the model kept asking: its last chance is a plain retry with everything seen
    report += "\n\nTroubleshooting transcript:\n" + history(conv.result)
    messages = prompts.retry_messages(conv.task, artifacts, conv.topology, conv.checks, report)
    retry = retry_answer(conv, messages, it)
    it.explanation = retry.explanation
    return retry.artifacts


def _run_command(conv: Session, it: Iteration, turn: int, ask: RunCommand
                 ) -> TroubleshootExchange:
    conv._checkpoint()
    cluster = conv._cluster
    try:
        r = cluster[ask.node].run(ask.command, timeout=COMMAND_TIMEOUT_S)
        status, output, seconds = r.exit_status, (r.stdout + r.stderr), r.seconds
    except Exception as exc:  # the cluster went down under us (stop) or SSH broke
        status, output, seconds = None, f"{type(exc).__name__}: {exc}", 0.0
    conv._checkpoint()
    ex = TroubleshootExchange(turn=turn, node=ask.node, command=ask.command, why=ask.why,
                              exit_status=status, output=tail(output, 8000), seconds=seconds)
    it.troubleshoot.append(ex)
    it.timings["troubleshoot_s"] = it.timings.get("troubleshoot_s", 0.0) + seconds
    events.emit(events.TroubleshootTurn(run_id=conv.run_id, iteration=it.number, turn=turn,
                                        node=ask.node, command=ask.command, why=ask.why,
                                        exit_status=status, output_tail=tail(output, 2000),
                                        seconds=seconds))
    conv._save()
    return ex


def history(result: RunResult) -> str:
    """What happened so far, for the synthesis prompt and the findings."""
    lines = []
    for it in result.iterations:
        if it.passed:
            lines.append(f"Iteration {it.number}: passed.")
            continue
        d = it.diagnosis
        lines.append(f"Iteration {it.number}: failed"
                     + (f" ({d.failure_class}: {d.summary})" if d else ""))
        if it.recovery:
            lines.append(f"  recovery: {it.recovery.path} ({it.recovery.reason})")
        for ex in it.troubleshoot:
            lines.append(f"  [{ex.node}] $ {ex.command} -> exit {ex.exit_status}\n"
                         + tail(ex.output, 600))
        if it.explanation:
            lines.append(f"  fix: {it.explanation}")
    return "\n".join(lines)


def retry_answer(conv: Session, messages: list[Message], it: Iteration) -> RetryAnswer:
    return conv.ask(messages, RetryAnswer, "retry", it)


def fix_answer(conv: Session, messages: list[Message], it: Iteration) -> Any:
    return conv.ask(messages, TroubleshootAnswer, "troubleshoot", it)
