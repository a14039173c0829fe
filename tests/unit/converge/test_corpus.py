"""The diagnosis corpus: real failure output captured on real VMs
(``corpus/regenerate.py``), each case run through the classifier.

Every case must get the class its file names, and the recorded reason must quote
the line that decided it (the file's ``evidence`` is a substring of that line).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from antrieb.converge.diagnose import choose_path, diagnose
from antrieb.converge.results import CheckResult, StepResult

CASES_DIR = Path(__file__).parent / "corpus" / "cases"
CASES = [yaml.safe_load(p.read_text()) for p in sorted(CASES_DIR.glob("*.yaml"))]


def _captured(case: dict, model: type) -> dict:
    return {k: case[k] for k in model.model_fields if k in case and k != "name"}


def _results(case: dict) -> tuple[list[StepResult], list[CheckResult]]:
    if case["kind"] == "check":
        return [], [CheckResult(name=case["name"], node="node1",
                                **_captured(case, CheckResult))]
    return [StepResult(node="node1", role="case", artifact="script:case",
                       **_captured(case, StepResult))], []


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_real_failure_is_classified_with_its_evidence(case):
    d = diagnose(*_results(case))
    assert d.failure_class == case["failure_class"], (d.decided_by, d.evidence)
    rec = choose_path(d)
    assert rec.reason.startswith(case["failure_class"])
    assert "node1" in rec.reason
    if case["evidence"]:
        assert case["evidence"] in d.decided_by, (d.decided_by, d.evidence)
        assert d.decided_by.strip()[:150] in rec.reason  # quoted, not paraphrased
    if case["kind"] == "check":
        assert f"check {case['name']!r}" in rec.reason
    else:
        assert "step script:case" in rec.reason


def test_the_corpus_is_wide_enough():
    classes = Counter(c["failure_class"] for c in CASES)
    services = {c["service"] for c in CASES}
    curated = {"nginx", "haproxy", "nftables", "postgresql", "ansible"}
    assert len(CASES) >= 40, classes
    assert len(services) >= 12, services
    assert sum(1 for c in CASES if c["service"] not in curated) > len(CASES) / 2
    assert {"infrastructure", "egress_blocked"} <= set(classes)


def test_harmless_runuser_line_is_not_a_permission_error():
    case = next(c for c in CASES if c["name"] == "psql-empty-result-runuser-cwd")
    assert "Permission denied" in case["stderr"]  # really there
    assert diagnose(*_results(case)).failure_class == "check_mismatch"
