"""The proof's gates on a verify iteration, beyond its checks passing once:

1. idempotence: the same artifacts applied again change nothing, every check passes;
2. residue: what the scripts left on each node that the result does not need;
3. reboot: every node reboots for real and every check passes again (a firewall rule
   or a ``sysctl -w`` applied only at run time is gone after it).

The cluster itself is in a freshly installed server's state (see
:class:`antrieb.vm.spec.Identity`): that is the proof's ``fresh_server`` gate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from antrieb import events
from antrieb.converge.apply import WORKDIR
from antrieb.converge.models import AnsibleArtifacts, ArtifactsT
from antrieb.converge.results import CheckResult, Diagnosis, Iteration, Proof, Residue, tail
from antrieb.converge.session import Session

# Where scratch files land. Files that packages own there are no residue.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/root", "/home")
STATE = "/var/lib/antrieb"  # the agent's own folder in the guest: where the baseline lives

BASELINE = (
    f"mkdir -p {STATE} && "
    f"find {' '.join(SCRATCH_DIRS)} -xdev -mindepth 1 2>/dev/null | sort > {STATE}/proof-files"
    f" && apt-mark showmanual | sort > {STATE}/proof-manual && touch {STATE}/proof-mark"
)

# Three kinds of lines, tab-separated: new scratch paths no package owns, private keys
# written since the baseline that others may read, packages marked manual since then.
SCAN = rf"""
cd {STATE} || exit 3
find {' '.join(SCRATCH_DIRS)} -xdev -mindepth 1 2>/dev/null | sort | comm -13 proof-files - \
  | grep -v '^{WORKDIR}\(/\|$\)' > proof-new || true
while IFS= read -r p; do
  dpkg-query -S "$p" >/dev/null 2>&1 || printf 'file\t%s\n' "$p"
done < proof-new
find / -xdev -type f -newer proof-mark -perm -o=r -size -64k \
  ! -path '/proc/*' ! -path '/sys/*' ! -path '/run/*' ! -path '{STATE}/*' 2>/dev/null \
  | while IFS= read -r f; do
      grep -qs -- '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$f" && printf 'private_key\t%s\n' "$f"
    done
apt-mark showmanual | sort | comm -13 proof-manual - | sed 's/^/package\t/'
true
"""


def baseline(cluster: Any) -> None:
    """Record, on every node, what was there before the scripts ran."""
    for name, r in cluster.run_all(BASELINE, timeout=120).items():
        if not r.ok:
            raise RuntimeError(f"{name}: residue baseline failed: {r.stderr.strip()[-300:]}")


def named_in(artifacts: ArtifactsT) -> str:
    """All the text of the artifacts, where a package a script installs is named."""
    if isinstance(artifacts, AnsibleArtifacts):
        return "\n".join([artifacts.playbook, artifacts.inventory or ""])
    return "\n".join(artifacts.scripts.values())


def parse_scan(node: str, output: str, artifacts_text: str) -> list[Residue]:
    """The residue of one node from :data:`SCAN`'s output. A new folder counts once
    (not each file in it); a package that some artifact names is wanted, not residue."""
    rows = [line.split("\t", 1) for line in output.splitlines() if "\t" in line]
    files = [item for kind, item in rows if kind == "file"]
    new = set(files)
    found: list[Residue] = []
    for path in files:
        if not any(parent in new for parent in _parents(path)):
            found.append(Residue(node=node, kind="file", item=path,
                                 detail="new since the scripts ran; no package owns it"))
    for kind, item in rows:
        if kind == "private_key":
            found.append(Residue(node=node, kind="private_key", item=item,
                                 detail="a private key others may read"))
        elif kind == "package" and not re.search(rf"(?<![\w.+-]){re.escape(item)}(?![\w.+-])",
                                                 artifacts_text):
            found.append(Residue(node=node, kind="package", item=item,
                                 detail="installed, but no final script names it"))
    return found


def _parents(path: str) -> Iterable[str]:
    while "/" in path.rstrip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0]
        if path:
            yield path


def residue(cluster: Any, artifacts: ArtifactsT) -> list[Residue]:
    """What the scripts left on each node, against the :func:`baseline`."""
    text = named_in(artifacts)
    found: list[Residue] = []
    for name, r in sorted(cluster.run_all(SCAN, timeout=300).items()):
        if not r.ok:
            raise RuntimeError(f"{name}: residue scan failed: {r.stderr.strip()[-300:]}")
        found += parse_scan(name, r.stdout, text)
    return found


def changed_by_reboot(before: Sequence[CheckResult],
                      after: Sequence[CheckResult]) -> list[tuple[CheckResult, CheckResult]]:
    """The checks that passed before the reboot and fail after it."""
    was = {(c.name, c.node): c for c in before}
    return [(was[(c.name, c.node)], c) for c in after
            if not c.passed and (c.name, c.node) in was and was[(c.name, c.node)].passed]


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


def prove(run: Session, cluster: Any, artifacts: ArtifactsT, it: Iteration,
          apply_and_check: Callable[..., tuple], run_checks: Callable[..., list]) -> Proof:
    """The gates after the verify iteration's first pass (``it.passed`` says how that
    ended): idempotence, residue, reboot. Each runs only if the one before passed; the
    iteration passes only if all do (residue counts only when the task is strict)."""
    gates = Proof(fresh_server=True, strict=run.task.strict)
    it.proof = gates
    try:
        if not it.passed:
            return gates
        it.rerun_steps, it.rerun_checks, apply_s, checks_s, install_s = apply_and_check(
            cluster, artifacts, it, rerun=True)
        it.timings.update(rerun_apply_s=apply_s, rerun_checks_s=checks_s,
                          rerun_install_s=install_s)
        gates.idempotent = idempotent(it, artifacts, len(run.checks))
        if not gates.idempotent:
            it.passed = False
            return gates
        t0 = time.monotonic()
        gates.residue = residue(cluster, artifacts)
        it.timings["residue_s"] = time.monotonic() - t0
        run._save()
        run._checkpoint()
        t0 = time.monotonic()
        gates.reboot_s = cluster.reboot()
        it.timings["reboot_s"] = time.monotonic() - t0
        run._checkpoint()
        t0 = time.monotonic()
        it.reboot_checks = run_checks(cluster, it, "reboot:")
        it.timings["reboot_checks_s"] = time.monotonic() - t0
        again = len(it.reboot_checks) == len(run.checks) and all(
            c.passed for c in it.reboot_checks)
        gates.reboot = "passed" if again else "failed"
        it.passed = again and not (gates.strict and gates.residue)
        return gates
    finally:
        events.emit(events.ProofFinished(
            run_id=run.run_id, iteration=it.number, passed=it.passed, **gates.gates()))
        run._save()


PERSIST_WHY = ("it passed before every node rebooted, so what the script applied at run time "
               "was never made persistent")


def diagnose_proof(it: Iteration) -> Diagnosis | None:
    """The failure of a gate the checks alone do not show: a check that no longer
    passes after the reboot (``not_persistent``), or, for a strict task, residue."""
    gates = it.proof
    if gates is None:
        return None
    if gates.reboot == "failed":
        before = it.rerun_checks or it.checks
        changed = changed_by_reboot(before, it.reboot_checks)
        if changed:
            was, now = changed[0]
            evidence = [f"before the reboot: check {was.name!r} on {was.node} passed",
                        f"after the reboot: {now.detail}"]
            if now.stdout or now.stderr:
                evidence.append(tail((now.stdout + "\n" + now.stderr).strip(), 300))
            return Diagnosis(failure_class="not_persistent", node=now.node, step=now.name,
                             kind="check", decided_by=evidence[1], why=PERSIST_WHY,
                             summary=f"check {now.name!r} on {now.node} passed before every "
                                     f"node rebooted and fails after: {now.detail}",
                             evidence=evidence)
        failed = [c for c in it.reboot_checks if not c.passed]
        first = failed[0] if failed else None
        return Diagnosis(failure_class="not_persistent", node=first.node if first else None,
                         step=first.name if first else None, kind="check",
                         decided_by=f"after the reboot: {first.detail}" if first else "",
                         why="the checks passed before every node rebooted",
                         summary="the checks did not pass again after every node rebooted",
                         evidence=[f"after the reboot: {c.name!r} on {c.node}: {c.detail}"
                                   for c in failed[:5]] or ["no check ran after the reboot"])
    if gates.strict and gates.residue and it.proof and gates.idempotent:
        first = gates.residue[0]
        return Diagnosis(failure_class="residue", node=first.node, kind="none",
                         decided_by=f"{first.node}: {first.kind} {first.item}",
                         why="the task is strict: what the scripts leave behind fails the proof",
                         summary=f"the scripts left {len(gates.residue)} thing(s) behind that "
                                 "the result does not need (strict task)",
                         evidence=[f"{r.node}: {r.kind} {r.item}: {r.detail}"
                                   for r in gates.residue[:8]])
    return None
