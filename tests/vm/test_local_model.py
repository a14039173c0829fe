"""A real model answers through antrieb's OpenAI provider: llama.cpp's server (built by
``./dev local-model``) serving SmolLM2-135M-Instruct on 127.0.0.1, one thread.

The model is far too weak to write working infrastructure code, so this asserts the
plumbing only, the way a user's first try with a local server goes: replies arrive, their
usage is counted from the server's own figures (not estimated), every request carried a
``max_tokens`` bound, and output the engine cannot use ends the run with a clear reason and
a readable record (the recording, replayable offline). Slow tier: the first run builds
llama.cpp from source (10-25 min on 2 cores); later runs take a minute or two.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from antrieb.converge.record import load_run
from antrieb.llm import Recording
from antrieb.notebook.experiments import load_experiment

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """``./dev local-model serve PORT``, started here and ended by its PID."""
    subprocess.run([str(ROOT / "dev"), "local-model"], check=True, timeout=3000)
    port = _free_port()
    log = tmp_path_factory.mktemp("llm") / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen([str(ROOT / "dev"), "local-model", "serve", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as reply:
                    models = json.loads(reply.read())
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the local model server did not come up:\n"
                                f"{log.read_text()[-3000:]}")
                time.sleep(1)
        assert [m["id"] for m in models["data"]] == ["smollm2"]
        yield url, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_real_local_model_answers_and_its_unusable_output_ends_the_run(local_model,
                                                                         monkeypatch,
                                                                         debian12):
    from antrieb.eval import run_eval

    url, log = local_model
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("ANTRIEB_MODEL", "smollm2")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTRIEB_MAX_TOKENS", str(MAX_TOKENS))
    lines: list[str] = []
    t0 = time.monotonic()
    ev = run_eval(["openai"], ["python-unit"], repeats=1,
                  budgets={"max_iterations": 1, "max_wall_s": 1800}, log=lines.append)
    wall = time.monotonic() - t0
    print("\n".join(lines))
    row = ev.rows[0]
    print({k: row[k] for k in ("status", "reason", "iterations", "llm_calls",
                               "prompt_tokens", "completion_tokens", "llm_s", "wall_s")},
          f"wall {wall:.1f}s")
    assert not ev.interrupted and len(ev.rows) == 1
    # a reply arrived, and its usage is the server's: prompt and completion counted
    assert row["llm_calls"] >= 1 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    # every reply was bounded: no call's completion exceeds max_tokens
    recording = Recording.load(Path(row["record_dir"]) / "llm.jsonl")
    assert recording.exchanges, "no exchange recorded"
    for exchange in recording.exchanges:
        assert exchange.error is None, exchange.error
        assert exchange.usage is not None and exchange.usage.measured
        assert 0 < exchange.usage.completion_tokens <= MAX_TOKENS, exchange.usage
        assert exchange.request and exchange.seconds and exchange.seconds > 0
    assert recording.exchanges[0].purpose == "design"
    # a 135M model does not converge this task: the run ends, and says why in words
    assert row["status"] != "converged"
    assert row["reason"] and len(row["reason"]) > 20, row
    if row["status"] == "failed":
        assert "model" in row["reason"] or "LLM" in row["reason"], row["reason"]
    # the record is readable: the run's own files, the experiment entry done
    run = load_run(row["run_id"])
    assert run["state"] == row["status"] and run["provider"] == "openai"
    assert load_experiment(ev.experiment_id)["grid"][0]["status"] == "ok"
    assert os.path.getsize(log) > 0
