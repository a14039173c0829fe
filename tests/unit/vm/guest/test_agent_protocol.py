"""The guest agent's request handling (the parts that don't change the machine)."""

from __future__ import annotations

import importlib.util
import json

from antrieb import config

spec = importlib.util.spec_from_file_location(
    "guest_agent", config.REPO_ROOT / "antrieb" / "vm" / "guest" / "agent.py")
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)


def test_ping():
    assert agent.handle(b'{"id": 1, "op": "ping"}') == {"id": 1, "ok": True}


def test_bad_json_is_an_error_reply():
    reply = agent.handle(b"{nope")
    assert reply["ok"] is False and "bad json" in reply["error"]


def test_unknown_op_is_an_error_reply():
    reply = agent.handle(json.dumps({"id": 7, "op": "format-disk"}).encode())
    assert reply == {"id": 7, "ok": False, "error": "KeyError: 'format-disk'"}


def test_exec_caps_output():
    reply = agent.handle(json.dumps({"id": 2, "op": "exec",
                                     "cmd": "head -c 200000 /dev/zero; echo err >&2"}).encode())
    assert reply["ok"] and reply["rc"] == 0
    assert len(reply["out"]) == agent.OUTPUT_CAP
    assert reply["err"] == "err\n"
