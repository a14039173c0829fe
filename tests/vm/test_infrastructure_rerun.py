"""A package mirror that answers 502 for one run: class infrastructure, the same code
runs again on a fresh cluster, and no model call is made for that failure.

The apt proxy's fault injection (``ANTRIEB_APT_FAULT``, :mod:`antrieb.vm.net.aptfault`)
answers the first request of the run with 502; the second attempt is served normally.
The only model call is the synthesis, from a hand-written recording.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from antrieb.converge import Converger, Task
from antrieb.examples import load_conversation
from antrieb.llm import ReplayProvider

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1200)]

SCRIPT = """#!/bin/bash
set -euo pipefail
apt-get update -q
apt-get install -y --no-install-recommends tree
"""

RECORDING = """\
format: antrieb-llm-recording
version: 1
model: hand-authored
exchanges:
  - purpose: synthesize
    expect: ["infrastructure", "rerun"]
    answer:
      notes: installs tree; safe to run again
      artifacts:
        tool: shell
        scripts:
          node: |
            #!/bin/bash
            set -euo pipefail
            apt-get update -q
            apt-get install -y --no-install-recommends tree
"""


def test_mirror_502_reruns_the_same_code_without_the_model(debian12, tmp_path: Path,
                                                           monkeypatch):
    fault = tmp_path / "fault"
    # apt tries a file 4 times (Acquire::Retries 3, seen in the corpus' 503 case): the one
    # package of attempt 1 fails every time (package lists are served: only /pool/ paths
    # count); attempt 2 is served normally
    fault.write_text("502 4 /pool/")
    monkeypatch.setenv("ANTRIEB_APT_FAULT", str(fault))
    recording = tmp_path / "rec.yaml"
    recording.write_text(RECORDING)
    task = Task.model_validate({
        "name": "mirror-502", "request": "install tree", "tool": "shell",
        "topology": {"nodes": [{"name": "node1", "role": "node", "image": "debian-12"}]},
        "artifacts": {"tool": "shell", "scripts": {"node": SCRIPT}},
        "checks": [{"name": "tree runs", "node": "node1", "command": "tree --version"}]})
    provider = ReplayProvider(load_conversation(recording))  # 'answer:' as in the examples
    result = Converger(task, provider=provider, record=False).run()
    assert result.status == "converged", (result.reason, result.findings)
    first, second = result.iterations[0], result.iterations[1]
    assert first.diagnosis.failure_class == "infrastructure", first.diagnosis
    assert "502" in first.diagnosis.decided_by
    assert first.recovery.path == "rerun" and "502" in first.recovery.reason
    assert second.artifacts == first.artifacts  # the same code, unchanged
    assert second.passed and result.paths() == ["rerun"]
    assert result.cost.llm_calls == 1 and provider.remaining == 0  # synthesis only
