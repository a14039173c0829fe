"""Reasons drawn from the evidence: the class, where it showed, the line that decided
it, what that line tells, and what that means for the path.

Example::

    reason(Diagnosis(failure_class="config_syntax", node="lb", step="script:lb",
                     decided_by="nginx: [emerg] unexpected \\"}\\" in /etc/nginx/conf.d/lb.conf:4",
                     why="the tool's own parser rejects ..."), "retry")
    # 'config_syntax in step script:lb on lb: "nginx: [emerg] ..." - the tool's own parser
    #  rejects ...; so the code and this log are enough for a corrected version (retry)'
"""

from __future__ import annotations

from antrieb.converge.results import Diagnosis

QUOTE_CHARS = 200

PATH_MEANS = {
    "retry": "so the code and this log are enough for a corrected version (retry)",
    "troubleshoot": "so the live cluster has to be inspected (troubleshoot)",
    "unknown": "so the full code and log go back to the model for a corrected version "
               "(retry)",
    "rerun": "so the same code runs again on a fresh cluster and the model is not asked "
             "to change it (rerun)",
}


def where(d: Diagnosis) -> str:
    if d.kind == "check":
        return f"check {d.step!r} on {d.node} (every step had passed)"
    if d.kind == "step":
        return f"step {d.step} on {d.node}"
    return "the attempt"


def quote(line: str) -> str:
    line = line.strip()
    if len(line) > QUOTE_CHARS:
        line = line[:QUOTE_CHARS - 3] + "..."
    return f'"{line}"'


def reason(d: Diagnosis, path: str, extra: str = "") -> str:
    """The recorded reason for taking ``path`` on diagnosis ``d``."""
    by = " (classified by the model)" if d.classified_by == "model" else ""
    evidence = f": {quote(d.decided_by)}" if d.decided_by else ""
    why = f" - {d.why}" if d.why else ""
    tail = extra or PATH_MEANS.get("unknown" if d.failure_class == "unknown" and path == "retry"
                                   else path, path)
    return f"{d.failure_class}{by} in {where(d)}{evidence}{why}; {tail}"
