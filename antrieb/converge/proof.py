"""The proof's verdicts on a verify iteration: what must hold beyond its checks passing."""

from __future__ import annotations

from antrieb.converge.models import AnsibleArtifacts, ArtifactsT
from antrieb.converge.results import Iteration


def idempotent(it: Iteration, artifacts: ArtifactsT, n_checks: int) -> bool:
    """The same artifacts applied a second time on the same cluster: every step succeeds,
    every check passes again, and Ansible reports nothing changed."""
    ok = all(s.ok for s in it.rerun_steps) and all(c.passed for c in it.rerun_checks) \
        and len(it.rerun_checks) == n_checks
    if ok and isinstance(artifacts, AnsibleArtifacts):
        changed = sum(s.changed or 0 for s in it.rerun_steps)
        if changed:
            # shown to diagnosis as a failed step: Ansible's own idempotence verdict
            step = it.rerun_steps[-1]
            step.exit_status = 2
            step.stderr += f"\nidempotence: the second run reported changed={changed}"
            return False
    return ok
