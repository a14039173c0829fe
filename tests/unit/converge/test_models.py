"""Task, topology, artifacts and answers: strict, with reasons a model can act on."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from antrieb.converge.answers import DesignAnswer, Fix, RetryAnswer, RunCommand, TroubleshootAnswer
from antrieb.converge.models import Check, ShellArtifacts, Task, Topology, constrained
from antrieb.errors import LLMOutputError
from antrieb.llm import Message, ask

from ..llm.fakes import ScriptedProvider


def _nodes(n: int, image: str = "debian-12") -> dict:
    return {"nodes": [{"name": f"node{i + 1}", "role": "app", "image": image}
                      for i in range(n)]}


def test_seven_nodes_are_refused_with_the_limit():
    with pytest.raises(ValidationError, match="7 nodes asked for, at most 4 allowed"):
        Topology.model_validate(_nodes(7))


def test_the_task_limit_is_stricter_than_the_cluster_limit():
    task = Task(request="x", max_nodes=2)
    with constrained(task.constraints()), pytest.raises(ValidationError, match="at most 2"):
        Topology.model_validate(_nodes(3))


def test_unknown_image_is_refused_with_the_catalogue():
    with pytest.raises(ValidationError, match=r"unknown image .debian-99.*debian-12"):
        Topology.model_validate(_nodes(1, "debian-99"))


def test_bad_and_duplicate_names():
    with pytest.raises(ValidationError, match="not a lowercase hostname"):
        Topology.model_validate({"nodes": [{"name": "Web_1", "role": "web"}]})
    with pytest.raises(ValidationError, match="distinct: a repeated"):
        Topology.model_validate({"nodes": [{"name": "a", "role": "x"},
                                           {"name": "a", "role": "y"}]})


def test_strict_models_refuse_unknown_fields_and_coercion():
    with pytest.raises(ValidationError, match="Extra inputs"):
        Check.model_validate({"name": "c", "node": "n", "command": "true", "sudo": True})
    with pytest.raises(ValidationError):
        Check.model_validate({"name": "c", "node": "n", "command": "true", "attempts": "3"})


def test_a_check_is_a_command_or_a_host_assertion():
    with pytest.raises(ValidationError, match="exactly one"):
        Check.model_validate({"name": "c", "node": "n"})
    with pytest.raises(ValidationError, match="exactly one"):
        Check.model_validate({"name": "c", "node": "n", "command": "true",
                              "host": {"kind": "service_running", "service": "nginx"}})
    with pytest.raises(ValidationError, match="bad regular expression"):
        Check.model_validate({"name": "c", "node": "n", "command": "true",
                              "expect": {"stdout_regex": ["("]}})
    ok = Check.model_validate({"name": "c", "node": "n",
                               "host": {"kind": "port_listening", "port": 80}})
    assert ok.host.kind == "port_listening"


def test_task_references_are_checked():
    base = {"request": "x", "topology": _nodes(1)}
    with pytest.raises(ValidationError, match="'ghost', which is not a node"):
        Task.model_validate({**base, "checks": [{"name": "c", "node": "ghost",
                                                 "command": "true"}]})
    with pytest.raises(ValidationError, match=r"roles \['db'\] that no node has"):
        Task.model_validate({**base, "artifacts": {"tool": "shell", "scripts": {"db": "x"}}})
    with pytest.raises(ValidationError, match="tool is 'ansible' but its artifacts"):
        Task.model_validate({**base, "tool": "ansible",
                             "artifacts": {"tool": "shell", "scripts": {"app": "x"}}})


def test_stages_must_name_every_role_once():
    with pytest.raises(ValidationError, match="stages must name every scripted role"):
        ShellArtifacts.model_validate({"scripts": {"a": "x", "b": "y"}, "stages": [["a"]]})
    arts = ShellArtifacts.model_validate({"scripts": {"a": "x", "b": "y"},
                                          "stages": [["b"], ["a"]]})
    assert arts.ordered_stages() == [["b"], ["a"]]
    assert ShellArtifacts.model_validate({"scripts": {"a": "x"}}).ordered_stages() == [["a"]]


def test_design_answer_must_fill_what_the_task_leaves_open():
    task = Task(request="x")
    arts = {"tool": "shell", "scripts": {"app": "true"}}
    with constrained(task.constraints()):
        with pytest.raises(ValidationError, match="'topology' is required"):
            DesignAnswer.model_validate({"artifacts": arts})
        with pytest.raises(ValidationError, match="'checks' is required"):
            DesignAnswer.model_validate({"topology": _nodes(1), "artifacts": arts})
        with pytest.raises(ValidationError, match="asks for tool 'shell'"):
            DesignAnswer.model_validate({
                "topology": _nodes(1),
                "artifacts": {"tool": "ansible", "control": "node1", "playbook": "x"},
                "checks": [{"name": "c", "node": "node1", "command": "true"}]})


def test_troubleshoot_answers_are_a_command_on_a_real_node_or_a_fix():
    task = Task.model_validate({"request": "x", "topology": _nodes(2)})
    from pydantic import TypeAdapter

    adapter = TypeAdapter(TroubleshootAnswer)
    with constrained(task.constraints()):
        run = adapter.validate_python({"action": "run", "node": "node2", "command": "ss -ltn"})
        assert isinstance(run, RunCommand)
        fix = adapter.validate_python({"action": "fix", "artifacts": {
            "tool": "shell", "scripts": {"app": "true"}}})
        assert isinstance(fix, Fix)
        with pytest.raises(ValidationError, match="node 'node9' does not exist"):
            adapter.validate_python({"action": "run", "node": "node9", "command": "true"})


def test_ask_reasks_with_the_reason_then_gives_up():
    task = Task.model_validate({"request": "x", "topology": _nodes(1)})
    wrong_role = json.dumps({"artifacts": {"tool": "shell", "scripts": {"db": "true"}}})
    good = json.dumps({"explanation": "ok", "artifacts": {"tool": "shell",
                                                           "scripts": {"app": "true"}}})
    llm = ScriptedProvider(wrong_role, good)
    msgs = [Message(role="user", content="fix it")]
    with constrained(task.constraints()):
        answer = ask(llm, msgs, RetryAnswer, purpose="retry")
    assert answer.artifacts.scripts == {"app": "true"}
    assert "roles ['db'] that no node has" in llm.calls[1][1][-1].content
    with constrained(task.constraints()), pytest.raises(LLMOutputError, match="after 3"):
        ask(ScriptedProvider(wrong_role), msgs, RetryAnswer, purpose="retry")
