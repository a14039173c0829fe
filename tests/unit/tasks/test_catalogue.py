"""The catalogue as shipped: enough tasks of each kind, each complete, its scripts well
formed, the curated examples' answers taken from their real runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter

import pytest
import yaml

from antrieb.converge.models import AnsibleArtifacts, ShellArtifacts
from antrieb.examples import load_example
from antrieb.examples import names as example_names
from antrieb.tasks import CATEGORIES, list_tasks, load_task, names, refusals

TASKS = list_tasks()
IDS = [t.name for t in TASKS]


def test_at_least_fifteen_tasks_across_the_three_kinds():
    assert len(TASKS) >= 15
    kinds = Counter(t.category for t in TASKS)
    assert set(kinds) == set(CATEGORIES) and min(kinds.values()) >= 3, kinds
    assert len(set(IDS)) == len(IDS) == len(names())


def test_every_curated_example_is_a_task():
    assert set(example_names()) <= set(IDS)


def test_there_are_ansible_tasks_on_the_ansible_image():
    ansible = [t for t in TASKS if t.task.tool == "ansible"]
    assert len(ansible) >= 3
    for t in ansible:
        assert isinstance(t.reference, AnsibleArtifacts)
        control = t.task.topology.nodes_of(
            next(n.role for n in t.task.topology.nodes if n.name == t.reference.control))
        assert {n.image for n in control} == {"debian-12-ansible"}


@pytest.mark.parametrize("spec", TASKS, ids=IDS)
def test_a_task_is_complete_and_passes_the_static_rule(spec):
    assert spec.task.topology and spec.task.checks and spec.task.name == spec.name
    assert spec.reference != spec.near_miss
    assert refusals(spec) == []
    assert {n.image for n in spec.task.topology.nodes} <= {"debian-12", "debian-12-ansible"}
    assert len(spec.near_miss_why.split()) >= 8, "say what the near miss gets wrong"


def _scripts(spec) -> list[str]:
    out = []
    for artifacts in (spec.reference, spec.near_miss):
        if isinstance(artifacts, ShellArtifacts):
            out += artifacts.scripts.values()
    return out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("spec", TASKS, ids=IDS)
def test_every_script_is_bash_that_parses_and_updates_before_it_installs(spec):
    for script in _scripts(spec):
        parsed = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert parsed.returncode == 0, parsed.stderr
        assert script.startswith("#!/bin/bash") and "set -euo pipefail" in script
        install = script.find("apt-get install")
        if install >= 0:  # a fresh server has empty package lists
            assert 0 <= script.find("apt-get update") < install


@pytest.mark.parametrize("spec", [t for t in TASKS if t.task.tool == "ansible"],
                         ids=[t.name for t in TASKS if t.task.tool == "ansible"])
def test_every_playbook_is_a_list_of_plays(spec):
    for artifacts in (spec.reference, spec.near_miss):
        plays = yaml.safe_load(artifacts.playbook)
        assert isinstance(plays, list) and all("hosts" in p and "tasks" in p for p in plays)
        for play in plays:
            for task in play["tasks"]:
                if "ansible.builtin.apt" in task:
                    assert task["ansible.builtin.apt"].get("update_cache") is True


@pytest.mark.parametrize("name", example_names())
def test_an_example_task_answers_with_its_real_run_and_its_first_mistake(name):
    spec, example = load_task(name), load_example(name)
    assert spec.example == name and spec.task == example.task
    run = json.loads((example.reference_run() / "run.json").read_text())
    assert run["result"]["status"] == "converged"
    assert spec.reference.model_dump(mode="json") == run["result"]["final"]
    first = json.loads(example.recording().exchanges[0].response)["artifacts"]
    assert spec.near_miss.model_dump(mode="json", exclude_none=True) == first


def test_summaries_name_nodes_checks_and_the_mistake():
    rows = {t.name: t.summary() for t in TASKS}
    assert rows["nginx-lb"]["nodes"] == ["lb", "web1", "web2"]
    assert rows["python-unit"]["checks"] == 3 and rows["python-unit"]["tool"] == "shell"
    assert re.search(r"User=", rows["python-unit"]["near_miss"])
    assert json.dumps(rows)  # JSON as it is
