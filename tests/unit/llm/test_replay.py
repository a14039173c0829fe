"""Replay plays recorded conversations strictly in order; recording survives a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from antrieb.errors import LLMUnavailable, RecordingFormatError, ReplayMismatch
from antrieb.llm import (
    Message,
    Recording,
    RecordingProvider,
    ReplayProvider,
    ask,
    get_provider,
)

from .fakes import ScriptedProvider

SYSTEM = Message(role="system", content="You configure Debian 12 clusters.")
TASK = Message(role="user", content="nginx load balancer with 2 backends")

HAND_WRITTEN = """\
format: antrieb-llm-recording
version: 1
model: gpt-4o-2024-08-06
exchanges:
  - purpose: design
    expect: ["load balancer", "2 backends"]
    response: |
      {"nodes": ["lb", "web1", "web2"]}
    usage: {prompt_tokens: 900, completion_tokens: 40}
    seconds: 3.5
  - purpose: retry
    expect: ["nginx: command not found"]
    response: '{"nodes": ["lb", "web1", "web2"], "fix": "apt-get install -y nginx"}'
"""


class Topology(BaseModel):
    nodes: list[str]


@pytest.fixture
def hand_written(tmp_path: Path) -> Path:
    path = tmp_path / "nginx-lb.yaml"
    path.write_text(HAND_WRITTEN)
    return path


def user(text: str) -> Message:
    return Message(role="user", content=text)


def test_plays_hand_written_exchanges_in_order(hand_written):
    llm = ReplayProvider(hand_written)
    assert (llm.name, llm.model, llm.remaining) == ("replay", "gpt-4o-2024-08-06", 2)
    first = llm.complete([SYSTEM, TASK], purpose="design")
    assert json.loads(first.text) == {"nodes": ["lb", "web1", "web2"]}
    assert first.usage.total == 940 and first.seconds == 0 and first.recorded_seconds == 3.5
    second = llm.complete([SYSTEM, TASK, user("step 2 failed: nginx: command not found")],
                          purpose="retry")
    assert "apt-get install" in second.text and llm.remaining == 0


def test_purpose_mismatch_names_index_and_both_purposes(hand_written):
    llm = ReplayProvider(hand_written)
    with pytest.raises(ReplayMismatch) as info:
        llm.complete([SYSTEM, TASK], purpose="troubleshoot")
    assert info.value.index == 0
    assert "'design'" in str(info.value) and "'troubleshoot'" in str(info.value)
    assert llm.remaining == 2  # a mismatch consumes nothing


def test_expect_substring_mismatch_shows_what_is_missing(hand_written):
    llm = ReplayProvider(hand_written)
    llm.complete([SYSTEM, TASK], purpose="design")
    with pytest.raises(ReplayMismatch) as info:
        llm.complete([SYSTEM, TASK, user("connection refused on port 80")], purpose="retry")
    message = str(info.value)
    assert "exchange 1" in message and "nginx: command not found" in message
    assert "connection refused on port 80" in message  # what came instead


def test_exhausted_recording_says_so(hand_written):
    llm = ReplayProvider(hand_written)
    llm.complete([TASK], purpose="design")
    llm.complete([user("nginx: command not found")], purpose="retry")
    with pytest.raises(ReplayMismatch, match="only 2 exchanges") as info:
        llm.complete([user("and now?")], purpose="synthesize")
    assert info.value.index == 2


def test_machine_recorded_requests_match_on_their_stable_parts(tmp_path):
    path = tmp_path / "run.jsonl"
    recorder = RecordingProvider(ScriptedProvider("a", "b"), path)
    recorder.complete([SYSTEM, TASK], purpose="design")
    live = [SYSTEM, TASK, Message(role="assistant", content="a"), user("rc=1 at 10:01:02")]
    recorder.complete(live, purpose="retry")

    # later messages hold live VM output (timestamps...): only their roles must match
    replay = ReplayProvider(path)
    assert replay.complete([SYSTEM, TASK], purpose="design").text == "a"
    again = [SYSTEM, TASK, Message(role="assistant", content="a"), user("rc=1 at 11:22:33")]
    assert replay.complete(again, purpose="retry").text == "b"

    # the system prompt and the task must be exactly the recorded ones
    other_task = user("nginx load balancer with 3 backends")
    with pytest.raises(ReplayMismatch) as info:
        ReplayProvider(path).complete([SYSTEM, other_task], purpose="design")
    assert "-nginx load balancer with 2 backends" in str(info.value)
    assert "+nginx load balancer with 3 backends" in str(info.value)

    fresh = ReplayProvider(path)
    fresh.complete([SYSTEM, TASK], purpose="design")
    with pytest.raises(ReplayMismatch, match="roles"):
        fresh.complete([SYSTEM, TASK, user("no assistant turn")], purpose="retry")


def test_round_trip_through_ask_with_a_re_ask(tmp_path):
    path = tmp_path / "run.jsonl"
    inner = ScriptedProvider("Sure! The nodes are lb and web1.", '{"nodes": ["lb", "web1"]}')
    recorded = ask(RecordingProvider(inner, path), [SYSTEM, TASK], Topology, purpose="design")
    assert recorded.nodes == ["lb", "web1"] and len(inner.calls) == 2

    recording = Recording.load(path)
    assert recording.model == "scripted-1" and recording.provider == "scripted"
    assert [len(x.request or []) for x in recording.exchanges] == [2, 4]
    assert recording.exchanges[1].usage.prompt_tokens == 40

    replayed = ask(ReplayProvider(path), [SYSTEM, TASK], Topology, purpose="design")
    assert replayed == recorded


def test_recorded_errors_replay_as_the_same_error(tmp_path):
    path = tmp_path / "run.jsonl"
    down = ScriptedProvider(LLMUnavailable("cannot reach the server", provider="scripted"))
    with pytest.raises(LLMUnavailable):
        RecordingProvider(down, path).complete([TASK], purpose="design")
    with pytest.raises(LLMUnavailable, match="cannot reach the server"):
        ReplayProvider(path).complete([TASK], purpose="design")


def test_partial_recording_survives_a_killed_process(tmp_path):
    path = tmp_path / "crashed.jsonl"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from antrieb.llm import Message, RecordingProvider
        from tests.unit.llm.fakes import ScriptedProvider
        llm = RecordingProvider(ScriptedProvider("one", "two", "three"), Path({str(path)!r}))
        for purpose in ("design", "retry"):
            llm.complete([Message(role="user", content=purpose)], purpose=purpose)
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no atexit
    """)
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    recording = Recording.load(path)
    assert [x.response for x in recording.exchanges] == ["one", "two"]

    # a crash in the middle of a write leaves a torn last line: the rest still loads
    with path.open("a") as fh:
        fh.write('{"purpose": "synthesize", "respo')
    assert len(Recording.load(path).exchanges) == 2


def test_recording_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "run.jsonl"
    RecordingProvider(ScriptedProvider("a"), path).complete([TASK], purpose="design")
    RecordingProvider(ScriptedProvider("b"), path, append=True).complete([TASK], purpose="retry")
    assert [x.response for x in Recording.load(path).exchanges] == ["a", "b"]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".jsonl"])
def test_save_and_load_every_spelling(tmp_path, hand_written, suffix):
    original = Recording.load(hand_written)
    path = tmp_path / f"copy{suffix}"
    original.save(path)
    assert Recording.load(path) == original


@pytest.mark.parametrize(("content", "where"), [
    ("", "empty file"),
    ('{"format": "something-else", "version": 1}\n', "header"),
    ('{"format": "antrieb-llm-recording"}\nnot json\n{"purpose": "x"}\n', "line 2"),
    ('{"format": "antrieb-llm-recording"}\n{"response": "no purpose"}\n', "purpose"),
])
def test_malformed_recordings_are_config_errors(tmp_path, content, where):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RecordingFormatError, match=where):
        ReplayProvider(path)


def test_get_provider_replay_spec(hand_written, monkeypatch):
    assert isinstance(get_provider(f"replay:{hand_written}"), ReplayProvider)
    monkeypatch.setenv("ANTRIEB_LLM", f"replay:{hand_written}")
    assert get_provider(None).model == "gpt-4o-2024-08-06"
