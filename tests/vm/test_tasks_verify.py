"""`antrieb tasks verify` on real VMs, on two small single-host tasks: the checks fail on
untouched nodes, the reference passes them (and the proof: applied again, rebooted), the
near miss fails, and the verdict lands in the task's record.

python-unit needs no package (fast under TCG); nginx-static installs nginx.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from antrieb.cli import app
from antrieb.tasks import last_verification

# slow tier until the catalogue is verified whole (issue 20): ~170 s under TCG
pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(2400)]

TASKS = ["python-unit", "nginx-static"]


def test_tasks_verify_proves_reference_and_near_miss(debian12):
    result = CliRunner().invoke(app, ["tasks", "verify", *TASKS, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    summary = json.loads(result.stdout)
    assert (summary["tasks"], summary["passed"]) == (2, 2), summary
    verdicts = {v["task"]: v for v in summary["verifications"]}
    assert verdicts["python-unit"]["near_miss_failed_at"] == "checks"  # runs as root
    assert verdicts["nginx-static"]["near_miss_failed_at"] == "checks"  # Welcome to nginx
    for name in TASKS:
        v = last_verification(name)
        assert v is not None and v.verified_at == verdicts[name]["verified_at"]
        assert v.result == "passed" and v.proof, v.reason
        assert not v.untouched.passed and v.untouched.error is None
        assert v.reference.passed and v.reference.failed_at is None
        assert len(v.reference.steps) == 2 and all(s.exit_status == 0 for s in v.reference.steps)
        assert v.near_miss.failed_at == "checks" and v.near_miss.failed_checks()
        print(f"{name}: {v.reason} (wall {v.wall_s:.0f}s: untouched "
              f"{v.untouched.seconds:.0f}s, reference {v.reference.seconds:.0f}s, "
              f"near miss {v.near_miss.seconds:.0f}s)")
    assert last_verification("python-unit").near_miss.failed_checks() == [
        "the service's process runs as user hello on app"]
    assert last_verification("nginx-static").near_miss.failed_checks() == [
        "the page is the site's own on web"]
