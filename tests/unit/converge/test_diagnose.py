"""Failure classification and path choice, table-driven from data/*.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from antrieb.converge.diagnose import choose_path, diagnose
from antrieb.converge.results import CheckResult, Diagnosis, Recovery, StepResult

DATA = Path(__file__).parent / "data"
CASES = [case for path in sorted(DATA.glob("diagnose_*.yaml"))
         for case in yaml.safe_load(path.read_text())]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_classification_table(case):
    steps = [StepResult(**s) for s in case.get("steps", [])]
    checks = [CheckResult(**c) for c in case.get("checks", [])]
    d = diagnose(steps, checks)
    assert d.failure_class == case["failure_class"], d
    joined = "\n".join(d.evidence)
    for needle in case["evidence"]:
        assert needle in joined, (needle, d.evidence)
    rec = choose_path(d)
    assert rec.path == case["path"]
    assert rec.reason and rec.failure_class == d.failure_class


def test_two_failed_retries_of_one_class_switch_to_troubleshooting():
    d = Diagnosis(failure_class="config_syntax")
    retry = Recovery(path="retry", reason="r", failure_class="config_syntax")
    assert choose_path(d, [retry]).path == "retry"
    switched = choose_path(d, [retry, retry])
    assert switched.path == "troubleshoot" and "two retries" in switched.reason
    other = Recovery(path="retry", reason="r", failure_class="missing_package")
    assert choose_path(d, [other, retry]).path == "retry"


def test_without_a_live_cluster_troubleshooting_falls_back_to_retry():
    rec = choose_path(Diagnosis(failure_class="connectivity"), troubleshoot_available=False)
    assert rec.path == "retry" and "no troubleshooting turns" in rec.reason
