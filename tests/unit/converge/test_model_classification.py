"""What no rule knows goes to the model once; the decision says who classified it,
and the exchange is recorded and replayed like any other."""

from __future__ import annotations

import json
from pathlib import Path

from antrieb.converge.diagnose import choose_path, diagnose
from antrieb.converge.diagnosis.model import PURPOSE, classify_unknown
from antrieb.converge.results import StepResult
from antrieb.llm import RecordingProvider, ReplayProvider, ask

RECORDING = """\
format: antrieb-llm-recording
version: 1
model: hand-authored
exchanges:
  - purpose: classify
    expect: ["useradd: user 'deploy' already exists"]
    response: |
      {"failure_class": "script_error",
       "evidence": "useradd: user 'deploy' already exists",
       "reason": "the script creates a user that exists: it is not repeatable"}
"""

STEP = StepResult(node="app", role="app", artifact="script:app", exit_status=9,
                  stderr="useradd: user 'deploy' already exists")


def _ask(provider):
    return lambda messages, schema, purpose: ask(provider, messages, schema, purpose=purpose)


def test_unknown_goes_to_the_model_and_the_decision_records_it(tmp_path: Path):
    d = diagnose([STEP], [])
    assert d.failure_class == "unknown" and d.classified_by == "rules"
    path = tmp_path / "classify.yaml"
    path.write_text(RECORDING)
    recorded = tmp_path / "llm.jsonl"
    provider = RecordingProvider(ReplayProvider(path), recorded)
    out = classify_unknown(_ask(provider), d, [STEP], [])
    assert (out.failure_class, out.classified_by) == ("script_error", "model")
    assert out.decided_by == "useradd: user 'deploy' already exists"
    rec = choose_path(out)
    assert rec.classified_by == "model" and rec.path == "retry"
    assert "classified by the model" in rec.reason and "already exists" in rec.reason
    lines = [json.loads(x) for x in recorded.read_text().splitlines()[1:]]
    assert [x["purpose"] for x in lines] == [PURPOSE]  # recorded like any exchange
    again = classify_unknown(_ask(ReplayProvider(recorded)), d, [STEP], [])
    assert again == out  # and replayed


def test_a_classified_failure_makes_no_model_call():
    d = diagnose([StepResult(node="n", role="r", artifact="script:r", exit_status=127,
                             stderr="x.sh: line 2: git: command not found")], [])

    def never(*_a):
        raise AssertionError("no model call for a failure the rules know")

    assert classify_unknown(never, d, [], []) is d


def test_no_usable_answer_leaves_it_unknown(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    bad = RECORDING.split("exchanges:\n")[1].replace('"script_error"', '"no_such_class"')
    bad = bad.replace('expect: ["useradd: user \'deploy\' already exists"]', "expect: []")
    path.write_text(RECORDING.split("exchanges:\n")[0] + "exchanges:\n" + bad * 3)
    d = diagnose([STEP], [])
    out = classify_unknown(_ask(ReplayProvider(path)), d, [STEP], [])
    assert out.failure_class == "unknown" and out.classified_by == "rules"
