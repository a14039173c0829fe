"""Property tests over every parser of user input: task specs, topologies, checks,
cluster specs, example names, recordings, run ids and the ``antrieb run`` command line.
Bad input gets a clear antrieb error (a ``ConfigError``; pydantic's ``ValidationError``
where a model is validated directly), never a crash, and nothing starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from antrieb.cli import app
from antrieb.cluster import Cluster
from antrieb.converge.models import Check, Task
from antrieb.converge.record import load_run, run_path
from antrieb.errors import AntriebError, ConfigError
from antrieb.examples import load_conversation, load_example, names
from antrieb.llm import Recording

from .test_fuzz_llm_output import json_values, mutated

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

VALID_TASK = {
    "name": "web", "request": "nginx serving hello", "tool": "shell", "max_nodes": 2,
    "topology": {"nodes": [{"name": "web1", "role": "web"}, {"name": "lb", "role": "lb"}]},
    "artifacts": {"tool": "shell", "scripts": {"web": "apt-get install -y nginx"},
                  "stages": [["web"]]},
    "checks": [{"name": "hello", "node": "web1", "command": "curl -s localhost",
                "expect": {"stdout_regex": ["hello"], "exit_status": 0}, "attempts": 2},
               {"name": "svc", "node": "lb", "host": {"kind": "port_listening", "port": 80}}],
}
names_text = st.text(max_size=80) | st.sampled_from(
    ["node1", "Node1", "-x", "localhost", "gateway", "a" * 64, "web_1", "ü", "", " ", "../x"])


@FUZZ
@given(spec=mutated(VALID_TASK) | json_values)
def test_task_specs_are_valid_or_refused_with_a_reason(spec):
    try:
        task = Task.model_validate(spec)
    except ValidationError as exc:
        assert exc.errors()  # pydantic says where and what
        return
    # what validated is consistent: checks run on existing nodes, the tool matches
    if task.topology is not None:
        names_ = set(task.topology.names())
        assert all(c.node in names_ for c in task.checks)
        assert len(task.topology.nodes) <= task.max_nodes
    if task.artifacts is not None:
        assert task.artifacts.tool == task.tool


@FUZZ
@given(spec=mutated(VALID_TASK["checks"][0]) | mutated(VALID_TASK["checks"][1]))
def test_checks_are_valid_or_refused(spec):
    try:
        check = Check.model_validate(spec)
    except ValidationError:
        return
    assert (check.command is None) != (check.host is None)


@FUZZ
@given(nodes=st.integers(-5, 10) | st.lists(names_text | st.fixed_dictionaries(
    {"name": names_text}, optional={"role": st.text(max_size=10),
                                    "image": st.sampled_from(["debian-12", "debian-99", ""])}),
    max_size=6) | json_values, image=st.sampled_from(["debian-12", "nope", ""]) | st.text())
def test_cluster_specs_fail_before_anything_starts(nodes, image):
    try:
        cluster = Cluster(nodes=nodes, image=image)
    except ConfigError as exc:
        assert str(exc)
        return
    assert cluster.state.value == "new" and 1 <= len(cluster) <= 4  # nothing started


@FUZZ
@given(name=names_text | st.sampled_from(["nginx-lb/../firewall", "./nginx-lb", "NGINX-LB"]))
def test_example_names(name):
    if name in names():
        assert load_example(name).name == name
        return
    with pytest.raises(ConfigError):
        load_example(name)


@FUZZ
@given(text=st.text(max_size=400) | json_values.map(json.dumps)
       | json_values.map(lambda v: json.dumps({"exchanges": v})))
def test_recordings_and_conversations_read_or_refused(tmp_path, text):
    for suffix in (".yaml", ".jsonl"):
        path = tmp_path / f"rec{suffix}"
        path.write_text(text, encoding="utf-8")
        for load in (Recording.load, load_conversation):
            try:
                load(path)
            except ConfigError as exc:
                assert str(path) in str(exc)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    secret = tmp_path / "cache" / "outside"
    secret.mkdir(parents=True)
    (secret / "run.json").write_text(json.dumps({"run_id": "outside", "state": "x"}))
    return tmp_path


@FUZZ
@given(run_id=st.text(max_size=40) | st.sampled_from(["..", "../outside", "/etc", "."]))
def test_run_ids_name_only_recorded_runs(private_cache, run_id):
    try:
        record = load_run(run_id)
    except ConfigError:
        return
    if "/" in run_id or run_id.startswith("."):  # the user named a run folder by its path
        assert (Path(run_id).expanduser() / "run.json").exists()
    else:  # an ID: only a folder directly under runs/, never one reached through ".."
        assert run_path(run_id).parent.resolve() == (private_cache / "cache" / "runs").resolve()
    assert record["run_id"]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(request=st.text(max_size=50), nodes=st.sampled_from(["0", "1", "5", "-1", "x", "4"]),
       tool=st.sampled_from(["shell", "ansible", "puppet", ""]),
       image=st.sampled_from(["debian-12", "debian-99", "", "../x"]))
def test_the_run_command_refuses_bad_input_with_exit_2(private_cache, request, nodes, tool,
                                                         image):
    # a recording that does not exist: whatever passes validation stops at the provider,
    # before any VM starts
    env = {**os.environ, "ANTRIEB_LLM": "replay:/nonexistent/recording.jsonl",
           "ANTRIEB_CACHE": str(private_cache / "cache")}
    assume(not request.startswith("-"))
    result = CliRunner().invoke(app, ["run", request, "--nodes", nodes, "--tool", tool,
                                      "--image", image], env=env)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit | AntriebError), result.exception
    assert not list(Path(private_cache / "cache").glob("runtime/*"))
