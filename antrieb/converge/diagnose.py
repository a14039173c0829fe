"""Failure diagnosis: step and check results in, a failure class with its evidence out,
then the recovery path (retry or troubleshoot) with the reason for the choice.

Both are pure functions of their input, so they are tested table-driven from data
files (``tests/unit/converge/data/*.yaml``).

- The first failed step (in apply order) decides: its output is matched against the
  patterns below, most specific class first; a step that outlived its timeout is
  ``timeout``.
- If every step passed, the failed checks decide: a host assertion on a service is
  ``service_failed``; output that shows a refused/unreachable/502/503 answer is
  ``connectivity``; anything else is ``check_mismatch``.

Example::

    d = diagnose(steps, checks)
    choose_path(d).path   # "retry" or "troubleshoot"
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from antrieb.converge.results import CheckResult, Diagnosis, FailureClass, Recovery, StepResult

# (class, pattern) in priority order: the first class with a matching line wins.
PATTERNS: list[tuple[FailureClass, re.Pattern[str]]] = [
    ("missing_package", re.compile(
        r"Unable to locate package|has no installation candidate|"
        r"No package matching|No matching distribution|Package '?[\w.+-]+'? is not available",
        re.I)),
    ("missing_command", re.compile(
        r"command not found|: not found$|No such file or directory.*(?:exec|bin/)|"
        r"Unable to find an? (?:executable|command)", re.I)),
    ("config_syntax", re.compile(
        r"\[emerg\]|configuration file .* test failed|syntax error|"
        r"unexpected (?:\"|'|end of file|token)|parsing \[.*\]|\[ALERT\].*pars|"
        r"Syntax Error while loading YAML|could not be parsed|invalid (?:option|directive)|"
        r"unknown directive|Errors? in configuration", re.I)),
    ("permission", re.compile(
        r"Permission denied|Operation not permitted|EACCES|are you root\?|"
        r"must be run as root|no pg_hba\.conf entry|password authentication failed|"
        r"Access denied for user", re.I)),
    ("service_failed", re.compile(
        r"Job for \S+ failed|Failed to (?:start|restart|reload) |"
        r"failed \(Result: |Main process exited|status=\d+/FAILURE|"
        r"Unit \S+ (?:not found|failed)|is not active", re.I)),
    ("connectivity", re.compile(
        r"Connection refused|Could not resolve host|Name or service not known|"
        r"No route to host|Connection timed out|Failed to connect|"
        r"Temporary failure in name resolution|\b50[234] (?:Bad Gateway|Service Unavailable|"
        r"Gateway Time-?out)|No server is available|UNREACHABLE!|"
        r"connect\(\) failed|upstream timed out", re.I)),
]

# Why each class goes where it goes (the reason recorded with the decision).
RETRY_REASONS: dict[str, str] = {
    "missing_package": "a package is missing or misnamed: the log names it, so a corrected "
                       "script from the full code and logs fixes it without a live session",
    "missing_command": "a command is missing: the log names it, so a corrected script "
                       "(install it first or use another) comes from the code and logs alone",
    "config_syntax": "the configuration does not parse and the parser names file and line: "
                     "a rewrite from the code and the log fixes it",
    "permission": "a permission error names the path or action: a corrected script from the "
                  "code and the log fixes it",
    "not_persistent": "a check that passed before every node rebooted fails after it: what "
                      "the script applied at run time was never made persistent, and the "
                      "check names it, so the code and this evidence are enough",
    "residue": "the scripts left files, keys or packages behind that the result does not "
               "need (strict task): the list names each, so a cleaner script comes from it",
    "unknown": "the failure matches no known pattern: the full code and logs go back for a "
               "corrected version",
}
TROUBLESHOOT_REASONS: dict[str, str] = {
    "service_failed": "a service did not come up and the step output does not say why: the "
                      "reason is in the live node's journal and state",
    "connectivity": "everything was applied but the nodes do not reach each other as "
                    "expected: the live cluster (listening sockets, addresses, config in "
                    "place) shows why, the logs do not",
    "check_mismatch": "everything was applied but a check sees the wrong answer: the live "
                      "cluster has to be inspected to find out why",
    "timeout": "a command hung: what it waits for can only be seen on the live cluster",
}

MAX_EVIDENCE = 8


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def _classify_text(text: str) -> tuple[FailureClass, list[str]] | None:
    lines = _lines(text)
    for cls, pattern in PATTERNS:
        hits = [line.strip()[:300] for line in lines if pattern.search(line)]
        if hits:
            return cls, hits[:MAX_EVIDENCE]
    return None


def _step_label(step: StepResult) -> str:
    return f"{step.artifact} on {step.node}"


def _diagnose_step(step: StepResult) -> Diagnosis:
    where = _step_label(step)
    if step.timed_out:
        last = _lines(step.output())[-3:]
        return Diagnosis(failure_class="timeout", node=step.node, step=step.artifact,
                         summary=f"{where} did not finish within its timeout",
                         evidence=[f"{where}: timed out after {step.seconds:.0f}s", *last])
    found = _classify_text(step.output())
    status = f"{where} exited {step.exit_status}"
    if found is None:
        last = _lines(step.output())[-MAX_EVIDENCE + 1:]
        return Diagnosis(failure_class="unknown", node=step.node, step=step.artifact,
                         summary=status, evidence=[status, *last])
    cls, hits = found
    return Diagnosis(failure_class=cls, node=step.node, step=step.artifact,
                     summary=f"{status}: {cls.replace('_', ' ')}", evidence=[status, *hits])


def _diagnose_check(check: CheckResult) -> Diagnosis:
    head = f"check {check.name!r} on {check.node} failed: {check.detail}".strip()
    text = f"{check.stdout}\n{check.stderr}"
    if check.timed_out:
        return Diagnosis(failure_class="timeout", node=check.node, step=check.name,
                         summary=head, evidence=[head, *_lines(text)[-3:]])
    if check.assertion == "service_running":
        return Diagnosis(failure_class="service_failed", node=check.node, step=check.name,
                         summary=head, evidence=[head])
    if check.assertion == "port_listening":
        return Diagnosis(failure_class="connectivity", node=check.node, step=check.name,
                         summary=head, evidence=[head, *_lines(text)[:MAX_EVIDENCE - 1]])
    found = _classify_text(text)
    if found is not None and found[0] in ("connectivity", "service_failed", "permission"):
        cls, hits = found
        return Diagnosis(failure_class=cls, node=check.node, step=check.name, summary=head,
                         evidence=[head, *hits])
    # curl's own exit codes say "could not connect" (7) and "timed out" (28) without text
    if check.assertion is None and check.exit_status in (7, 28) and "curl" in check.detail:
        return Diagnosis(failure_class="connectivity", node=check.node, step=check.name,
                         summary=head, evidence=[head])
    return Diagnosis(failure_class="check_mismatch", node=check.node, step=check.name,
                     summary=head, evidence=[head, *_lines(text)[:MAX_EVIDENCE - 1]])


def diagnose(steps: Sequence[StepResult], checks: Sequence[CheckResult]) -> Diagnosis:
    """The failure class of an attempt, with the evidence lines that led there.

    Example::

        diagnose([StepResult(node="lb", role="lb", artifact="script:lb", exit_status=1,
                             stderr='nginx: [emerg] unexpected "}" in /etc/nginx/...')], [])
        # Diagnosis(failure_class="config_syntax", ...)
    """
    failed_steps = [s for s in steps if not s.ok]
    if failed_steps:
        return _diagnose_step(failed_steps[0])
    failed_checks = [c for c in checks if not c.passed]
    if not failed_checks:
        return Diagnosis(failure_class="unknown", summary="nothing failed",
                         evidence=["every step and check passed"])
    # A failed service assertion explains failing HTTP checks, not the other way round.
    failed_checks.sort(key=lambda c: c.assertion != "service_running")
    return _diagnose_check(failed_checks[0])


def choose_path(diagnosis: Diagnosis, previous: Sequence[Recovery] = (),
                *, troubleshoot_available: bool = True) -> Recovery:
    """Retry (full artifacts + logs) or troubleshoot (live session), and why.

    A class whose cause the logs name goes to retry; a class whose cause only the live
    cluster shows goes to troubleshoot. If the last two recoveries were retries for the
    same class, the logs were evidently not enough: troubleshoot instead.

    Example::

        choose_path(Diagnosis(failure_class="connectivity")).path  # "troubleshoot"
    """
    cls = diagnosis.failure_class
    recent = list(previous)[-2:]
    if (troubleshoot_available and len(recent) == 2
            and all(r.path == "retry" and r.failure_class == cls for r in recent)):
        return Recovery(path="troubleshoot", failure_class=cls,
                        reason=f"two retries with logs did not fix {cls.replace('_', ' ')}: "
                               "inspecting the live cluster instead")
    if cls in TROUBLESHOOT_REASONS and troubleshoot_available:
        return Recovery(path="troubleshoot", failure_class=cls, reason=TROUBLESHOOT_REASONS[cls])
    if cls in TROUBLESHOOT_REASONS:
        return Recovery(path="retry", failure_class=cls,
                        reason=TROUBLESHOOT_REASONS[cls] + "; but no troubleshooting turns "
                        "are left, so the code and logs go back for a retry")
    return Recovery(path="retry", failure_class=cls, reason=RETRY_REASONS.get(cls, "retry"))
