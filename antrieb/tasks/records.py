"""The verification record of a task: when it was last proven on VMs, how, how long it took.

Kept in the cache, ``<cache>/tasks/<name>.jsonl``, one :class:`Verification` a line,
appended (the last line is the latest). The cache and not the package or the run store,
because a verification is a fact about *this host's* images and package mirror at one
time (a Debian point release can change what a script installs), like the built images
beside it; the package folder may be read-only (an installed wheel) and the run store
may be switched off (``ANTRIEB_STORE=off``) and holds runs, not task facts.

Example::

    last_verification("nginx-static")   # Verification | None
    [v.result for v in verifications("nginx-static")]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from antrieb import config

Phase = Literal["apply", "checks", "idempotence", "reboot"]
Result = Literal["passed", "failed", "refused", "error"]


class StepOutcome(BaseModel):
    node: str
    artifact: str
    exit_status: int | None
    seconds: float = 0.0
    output_tail: str = ""  # only of a failed step


class CheckOutcome(BaseModel):
    name: str
    node: str
    passed: bool
    detail: str = ""


class Trial(BaseModel):
    """One fresh cluster: ``artifacts`` applied (none: the untouched nodes), then the
    checks; with the proof, applied again and checked, rebooted and checked."""

    artifacts: Literal["none", "reference", "near_miss"]
    passed: bool
    failed_at: Phase | None = None  # where it stopped passing
    steps: list[StepOutcome] = Field(default_factory=list)
    checks: list[CheckOutcome] = Field(default_factory=list)  # the last round that ran
    seconds: float = 0.0
    error: str | None = None  # the trial could not be carried out (a cluster failed)

    def failed_checks(self) -> list[str]:
        return [f"{c.name} on {c.node}" for c in self.checks if not c.passed]


class Verification(BaseModel):
    """A task's reference and near miss tried on fresh clusters, with the verdict."""

    task: str
    verified_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(
        timespec="seconds"))
    at: float = Field(default_factory=time.time)
    result: Result
    reason: str
    wall_s: float = 0.0
    proof: bool = True  # the reference also had to pass idempotence and the reboot
    untouched: Trial | None = None
    reference: Trial | None = None
    near_miss: Trial | None = None

    def brief(self) -> dict[str, object]:
        """The figures for listings and ``tasks verify --json``."""
        return {"task": self.task, "result": self.result, "reason": self.reason,
                "verified_at": self.verified_at, "wall_s": round(self.wall_s, 1),
                "proof": self.proof,
                "untouched_passed": None if self.untouched is None else
                sum(c.passed for c in self.untouched.checks),
                "reference": None if self.reference is None else self.reference.passed,
                "near_miss_failed_at": None if self.near_miss is None
                else self.near_miss.failed_at}


def records_dir() -> Path:
    path = config.cache_dir() / "tasks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_verification(v: Verification) -> Path:
    """Append ``v`` to its task's record."""
    path = records_dir() / f"{v.task}.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(v.model_dump_json() + "\n")
    return path


def verifications(task: str) -> list[Verification]:
    """Every recorded verification of ``task``, oldest first (unreadable lines skipped)."""
    path = records_dir() / f"{task}.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            found.append(Verification.model_validate_json(line))
        except ValidationError:
            continue  # a torn last line, or a record of an older antrieb
    return found


def last_verification(task: str) -> Verification | None:
    found = verifications(task)
    return found[-1] if found else None
