"""The curated catalogue: every example loads, and its conversation is well-formed."""

from __future__ import annotations

import json

import pytest

from antrieb.converge.answers import DesignAnswer, RetryAnswer, SynthesisAnswer
from antrieb.converge.models import constrained
from antrieb.errors import TaskError, UnknownNameError
from antrieb.examples import list_examples, load_conversation, load_example, names
from antrieb.llm import extract_json

SCHEMAS = {"design": DesignAnswer, "retry": RetryAnswer, "synthesize": SynthesisAnswer}


def test_catalogue_has_both_recovery_paths():
    assert {"nginx-lb", "haproxy-nginx"} <= set(names())
    paths = {p for e in list_examples() for p in e.expected_paths}
    assert {"retry", "troubleshoot"} <= paths


@pytest.mark.parametrize("name", names())
def test_every_answer_of_every_example_validates_against_its_task(name):
    from pydantic import TypeAdapter

    from antrieb.converge.answers import TroubleshootAnswer

    example = load_example(name)
    recording = example.recording()
    purposes = [x.purpose for x in recording.exchanges]
    assert purposes[-1] == "synthesize"
    assert purposes.count("troubleshoot") > 0 or purposes.count("retry") > 0
    with constrained(example.task.constraints()):
        for exchange in recording.exchanges:
            value = extract_json(exchange.response)
            if exchange.purpose == "troubleshoot":
                TypeAdapter(TroubleshootAnswer).validate_python(value)
            else:
                SCHEMAS[exchange.purpose].model_validate(value)
            assert exchange.expect, "hand-authored exchanges say what they answer"


def test_unknown_example_lists_the_known(tmp_path):
    with pytest.raises(UnknownNameError, match="nginx-lb"):
        load_example("nope")
    bad = tmp_path / "c.yaml"
    bad.write_text("exchanges:\n  - {purpose: design, answer: {}, response: x}\n")
    with pytest.raises(TaskError, match="not both"):
        load_conversation(bad)


@pytest.mark.parametrize("name", [n for n in names() if load_example(n).reference_run()])
def test_the_shipped_run_of_an_example_is_a_real_converged_record(name):
    from antrieb.converge.record import load_events, load_run

    folder = load_example(name).reference_run()
    record = load_run(str(folder))  # a folder path works where a run id does
    assert record["dir"] == str(folder) and record["task"]["name"] == name
    assert record["state"] == "converged"
    paths = [it["recovery"]["path"] for it in record["result"]["iterations"]
             if it.get("recovery")]
    assert paths == load_example(name).expected_paths
    kinds = {e["kind"] for e in load_events(str(folder))}
    assert {"cluster_ready", "command_finished", "run_finished"} <= kinds  # real VMs ran it


def test_an_example_run_takes_extra_meta(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    conv = load_example("firewall").converger(meta={"experiment_id": "e1"})
    try:
        base = json.loads((conv.recorder.dir / "run.json").read_text())
        assert base["example"] == "firewall" and base["experiment_id"] == "e1"
    finally:
        conv.recorder.close()
