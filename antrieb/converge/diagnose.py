"""Failure diagnosis: step and check results in, a failure class with its evidence out,
then the recovery path (retry, troubleshoot or rerun) with the reason for the choice.

Both are pure functions of their input, tested table-driven from data files
(``tests/unit/converge/data/*.yaml`` and the corpus of real VM output in
``tests/unit/converge/corpus/cases/``).

- The first failed step (in apply order) decides: its output lines are matched against
  the rule table (:mod:`antrieb.converge.diagnosis.rules`), first rule first; a step
  that outlived its timeout is ``timeout``. Lines known to be harmless never match.
- If every step passed, the failed checks decide: a host assertion on a service is
  ``service_failed``; a request that left the cluster is ``egress_blocked``; output
  that shows a refused/unreachable answer is ``connectivity``; anything else is
  ``check_mismatch``.
- The reason names the class, the step or check, quotes the deciding line and says
  what it means for the path (:mod:`antrieb.converge.diagnosis.reasons`).

Example::

    d = diagnose(steps, checks)
    choose_path(d).path   # "retry", "troubleshoot" or "rerun"
"""

from __future__ import annotations

from collections.abc import Sequence

from antrieb.converge.diagnosis.reasons import reason
from antrieb.converge.diagnosis.rules import (
    EGRESS_ADVICE,
    classify_lines,
    last_telling_line,
    useful_lines,
)
from antrieb.converge.results import CheckResult, Diagnosis, FailureClass, Recovery, StepResult

RETRY_CLASSES = {"missing_package", "missing_command", "config_syntax", "script_error",
                 "permission", "egress_blocked", "not_persistent", "residue", "unknown"}
TROUBLESHOOT_CLASSES = {"service_failed", "connectivity", "check_mismatch", "timeout"}
RERUN_CLASSES = {"infrastructure"}
MAX_RERUNS = 2  # infrastructure failures in one run before the model is asked after all

MAX_EVIDENCE = 8

_UNKNOWN_WHY = "no rule knows this output (quoted: its last line that reads like an error)"
_CHECK_WHY = {
    "service_failed": "the service is not running and a check cannot say why: the reason is "
                      "in the live node's journal and state",
    "connectivity": "every step passed but something in the cluster does not answer as "
                    "expected: the live cluster (listening sockets, addresses, config in "
                    "place) shows why, the logs do not",
    "check_mismatch": "every step passed but the check sees the wrong answer: only the live "
                      "cluster shows why",
}


def _diagnose_step(step: StepResult) -> Diagnosis:
    where = f"{step.artifact} on {step.node}"
    base = dict(node=step.node, step=step.artifact, kind="step")
    lines = useful_lines(step.output())
    if step.timed_out:
        first = f"{where}: timed out after {step.seconds:.0f}s"
        last = f"; its last output was {lines[-1]!r}" if lines else ""
        return Diagnosis(failure_class="timeout", summary=f"{where} did not finish within its "
                         "timeout", evidence=[first, *lines[-3:]], decided_by=first,
                         why=f"it was still running{last}: what it waits for can only be seen "
                         "on the live cluster", **base)
    status = f"{where} exited {step.exit_status}"
    match = classify_lines(lines)
    if match is None:
        last = lines[-MAX_EVIDENCE + 1:]
        return Diagnosis(failure_class="unknown", summary=status, evidence=[status, *last],
                         decided_by=last_telling_line(lines) or status, why=_UNKNOWN_WHY,
                         **base)
    cls = match.rule.failure_class
    return Diagnosis(failure_class=cls, summary=f"{status}: {cls.replace('_', ' ')}",
                     evidence=[status, *match.lines[:MAX_EVIDENCE - 1]], decided_by=match.line,
                     why=match.rule.why, advice=EGRESS_ADVICE if cls == "egress_blocked" else "",
                     **base)


def _check(check: CheckResult, cls: FailureClass, head: str, evidence: list[str],
           decided_by: str, why: str) -> Diagnosis:
    return Diagnosis(failure_class=cls, node=check.node, step=check.name, summary=head,
                     evidence=[head, *evidence], kind="check", decided_by=decided_by, why=why,
                     advice=EGRESS_ADVICE if cls == "egress_blocked" else "")


def _diagnose_check(check: CheckResult) -> Diagnosis:
    head = f"check {check.name!r} on {check.node} failed: {check.detail}".strip()
    lines = useful_lines(f"{check.stdout}\n{check.stderr}")
    if check.timed_out:
        return _check(check, "timeout", head, lines[-3:], check.detail or head,
                      "the check command hung: what it waits for only shows on the live cluster")
    if check.assertion == "service_running":
        return _check(check, "service_failed", head, [], check.detail, _CHECK_WHY["service_failed"])
    if check.assertion == "port_listening":
        return _check(check, "connectivity", head, lines[:MAX_EVIDENCE - 1], check.detail,
                      "nothing listens where the check expects it: "
                      + _CHECK_WHY["connectivity"].split(": ", 1)[1])
    match = classify_lines(lines, allowed=("egress_blocked", "connectivity", "service_failed",
                                           "permission", "missing_command"))
    if match is not None:
        cls = match.rule.failure_class
        why = _CHECK_WHY.get(cls, match.rule.why) if cls != "egress_blocked" else match.rule.why
        if cls in ("permission", "missing_command"):
            why = match.rule.why
        return _check(check, cls, head, match.lines[:MAX_EVIDENCE - 1], match.line, why)
    # curl's own exit codes say "could not connect" (7) and "timed out" (28) without text
    if check.assertion is None and check.exit_status in (7, 28) and "curl" in check.detail:
        return _check(check, "connectivity", head, [], check.detail,
                      f"curl exited {check.exit_status} (could not connect / timed out): "
                      + _CHECK_WHY["connectivity"].split(": ", 1)[1])
    # the check's own verdict (what was expected and not seen) is the telling line
    return _check(check, "check_mismatch", head, lines[:MAX_EVIDENCE - 1], check.detail or head,
                  _CHECK_WHY["check_mismatch"])


def diagnose(steps: Sequence[StepResult], checks: Sequence[CheckResult]) -> Diagnosis:
    """The failure class of an attempt, with the evidence lines that led there.

    Example::

        diagnose([StepResult(node="lb", role="lb", artifact="script:lb", exit_status=1,
                             stderr='nginx: [emerg] unexpected "}" in /etc/nginx/...')], [])
        # Diagnosis(failure_class="config_syntax", decided_by='nginx: [emerg] ...', ...)
    """
    failed_steps = [s for s in steps if not s.ok]
    if failed_steps:
        return _diagnose_step(failed_steps[0])
    failed_checks = [c for c in checks if not c.passed]
    if not failed_checks:
        return Diagnosis(failure_class="unknown", summary="nothing failed", kind="none",
                         evidence=["every step and check passed"])
    # A failed service assertion explains failing HTTP checks, not the other way round.
    failed_checks.sort(key=lambda c: c.assertion != "service_running")
    return _diagnose_check(failed_checks[0])


def choose_path(diagnosis: Diagnosis, previous: Sequence[Recovery] = (),
                *, troubleshoot_available: bool = True) -> Recovery:
    """Retry (full artifacts + logs), troubleshoot (live session) or rerun (the same
    code on a fresh cluster), and why.

    A class whose cause the logs name goes to retry; a class whose cause only the live
    cluster shows goes to troubleshoot; a failure of the platform (mirror, proxy, VM)
    is rerun unchanged, at most :data:`MAX_RERUNS` times a run. If the last two
    recoveries were retries for the same class, the logs were evidently not enough:
    troubleshoot instead.

    Example::

        choose_path(Diagnosis(failure_class="connectivity")).path  # "troubleshoot"
    """
    d = diagnosis
    cls = d.failure_class
    by = d.classified_by

    def rec(path: str, extra: str = "") -> Recovery:
        return Recovery(path=path, failure_class=cls, reason=reason(d, path, extra),  # type: ignore[arg-type]
                        classified_by=by)

    if cls in RERUN_CLASSES:
        reruns = sum(1 for r in previous if r.path == "rerun")
        if reruns < MAX_RERUNS:
            return rec("rerun", "so the same code runs again on a fresh cluster and the model "
                       f"is not asked to change it (rerun {reruns + 1} of {MAX_RERUNS})")
        return rec("retry", f"the platform failed {reruns + 1} times in this run, more than "
                   f"the {MAX_RERUNS} reruns allowed, so the model gets the log after all "
                   "(retry)")
    recent = list(previous)[-2:]
    if (troubleshoot_available and len(recent) == 2
            and all(r.path == "retry" and r.failure_class == cls for r in recent)):
        return rec("troubleshoot", f"two retries with logs did not fix "
                   f"{cls.replace('_', ' ')}: inspecting the live cluster instead (troubleshoot)")
    if cls in TROUBLESHOOT_CLASSES and troubleshoot_available:
        return rec("troubleshoot")
    if cls in TROUBLESHOOT_CLASSES:
        return rec("retry", "the live cluster would show more, but no troubleshooting turns "
                   "are left, so the code and logs go back for a retry")
    return rec("retry")
