"""The static rule: checks that pass whatever the nodes hold are refused; checks that
test behaviour are not. Table-driven: the rule is a pure function of the check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from antrieb.converge.models import Check
from antrieb.errors import TaskError, TaskRefused
from antrieb.tasks import load_task, load_task_file, trivial_reasons

IMAGE = ("openssh-server", "python3", "curl", "sudo")

TRIVIAL = [
    ({"command": ""}, "empty"),
    ({"command": "   "}, "empty"),
    ({"command": "true"}, "does nothing"),
    ({"command": ":"}, "does nothing"),
    ({"command": "exit 0"}, "does nothing"),
    ({"command": "true; true && :"}, "does nothing"),
    ({"command": "/bin/true"}, "does nothing"),
    ({"command": "echo ok", "expect": {"stdout_regex": ["ok"]}}, "only prints"),
    ({"command": "printf 'hello\\n'; echo done"}, "only prints"),
    ({"command": "curl -s http://web/ || true"}, "forced to 0"),
    ({"command": "systemctl is-active nginx; exit 0"}, "forced to 0"),
    ({"command": "curl -s http://web/ || :", "expect": {"stdout_regex": [".*"]}},
     "forced to 0"),
    ({"command": "curl -s http://web/", "expect": {"exit_status": None}}, "any exit status"),
    ({"command": "curl -s http://web/", "expect": {"exit_status": None,
                                                    "stdout_regex": ["", "^"]}},
     "any exit status"),
    ({"host": {"kind": "service_running", "service": "ssh"}}, "every fresh node runs"),
    ({"host": {"kind": "port_listening", "port": 22}}, "port 22"),
    ({"host": {"kind": "package_installed", "package": "curl"}}, "in the node's image"),
    ({"host": {"kind": "file_contains", "path": "/etc/nginx/nginx.conf", "pattern": ".*"}},
     "matches any file"),
]

MEANINGFUL = [
    {"command": "curl -s --max-time 5 http://lb/", "expect": {"stdout_regex": ["hello"]}},
    {"command": "timeout 4 bash -c '</dev/tcp/fw/8080' && echo open || echo blocked",
     "expect": {"stdout_regex": ["^blocked$"]}},
    {"command": "redis-cli ping 2>&1", "expect": {"exit_status": None,
                                                  "stdout_regex": ["NOAUTH"]}},
    {"command": "curl -s http://web/ || true", "expect": {"stdout_regex": ["tls ok"]}},
    {"command": "echo $(systemctl is-active nginx)", "expect": {"stdout_regex": ["^active$"]}},
    {"command": "test -f /etc/nginx/conf.d/lb.conf"},  # weak, but the runtime rule's job
    {"command": "systemctl is-active nginx", "expect": {"exit_status": 0}},
    {"host": {"kind": "service_running", "service": "nginx"}},
    {"host": {"kind": "port_listening", "port": 80}},
    {"host": {"kind": "package_installed", "package": "nginx"}},
    {"host": {"kind": "file_contains", "path": "/etc/x", "pattern": "^listen 80"}},
]


def _check(fields: dict) -> Check:
    return Check.model_validate({"name": "c", "node": "web", **fields})


@pytest.mark.parametrize(("fields", "why"), TRIVIAL, ids=[str(f) for f, _ in TRIVIAL])
def test_trivial_checks_are_named_with_the_reason(fields, why):
    reasons = trivial_reasons(_check(fields), IMAGE)
    assert reasons and why in reasons[0], reasons


@pytest.mark.parametrize("fields", MEANINGFUL, ids=[str(f) for f in MEANINGFUL])
def test_checks_that_ask_something_pass_the_rule(fields):
    assert trivial_reasons(_check(fields), IMAGE) == []


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(Path(load_task("nginx-static").source).read_text())
    mutate(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_task_with_a_trivial_check_is_refused(tmp_path):
    def add(data):
        data["task"]["checks"].append({"name": "always", "node": "web", "command": "true"})

    with pytest.raises(TaskRefused) as refused:
        load_task_file(_write(tmp_path, add))
    assert refused.value.reasons == ["check 'always' on web: the command does nothing ('true')"]
    assert "refused" in str(refused.value)


def test_a_near_miss_that_is_the_reference_is_refused(tmp_path):
    def same(data):
        data["near_miss"]["artifacts"] = data["reference"]

    with pytest.raises(TaskError, match="the near miss is the reference"):
        load_task_file(_write(tmp_path, same))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["task"].pop("checks"), "fixes its topology and its checks"),
    (lambda d: d["task"].pop("topology"), "fixes its topology and its checks"),
    (lambda d: d["reference"]["scripts"].update(db="#!/bin/bash\ntrue\n"), "reference"),
    (lambda d: d.update(category="misc"), "category"),
    (lambda d: d.pop("near_miss"), "'near_miss' needs 'why' and 'artifacts'"),
])
def test_incomplete_tasks_say_what_is_missing(tmp_path, mutate, message):
    with pytest.raises(TaskError, match=message):
        load_task_file(_write(tmp_path, mutate))


def test_a_task_file_of_ones_own_loads_by_path(tmp_path):
    path = _write(tmp_path, lambda d: d.update(title="mine"))
    spec = load_task(str(path))
    assert (spec.name, spec.title, spec.source) == ("mine", "mine", str(path))
