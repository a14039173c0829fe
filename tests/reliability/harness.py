"""What the reliability tests share: a real chat-completions server that plays a tiny
task's model, the tiny task itself, and a look at the process tree.

The model server speaks HTTP on 127.0.0.1 (the real ``openai`` client talks to it), tells
the purpose of a request from its last message (design, retry, troubleshoot, synthesis)
and answers after ``delay`` seconds, so every run has a real LLM wait to be stopped in.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from antrieb.bench_soak import alive, descendants

MODEL = "tiny-model"
# Short sleeps give every phase (apply, checks) a window to be stopped in.
APPLY_SLEEP = 1.5
CHECK_SLEEP = 1.5


def tiny_artifacts(script: str | None = None) -> dict:
    return {"tool": "shell",
            "scripts": {"app": script or f"sleep {APPLY_SLEEP}; echo hi > /srv/hello"}}


def tiny_checks() -> list[dict]:
    return [{"name": "hello", "node": "node1", "command": f"sleep {CHECK_SLEEP}; cat /srv/hello",
             "expect": {"stdout_regex": ["hi"]}, "attempts": 1}]


def tiny_task(**extra: Any) -> dict:
    """One node; the model designs artifacts and checks (so the run waits on it first)."""
    return {"name": "tiny", "request": "a file /srv/hello saying hi", "max_nodes": 1,
            "topology": {"nodes": [{"name": "node1", "role": "app"}]}, **extra}


def design_answer(script: str | None = None, checks: list[dict] | None = None) -> dict:
    return {"topology": {"nodes": [{"name": "node1", "role": "app"}]},
            "artifacts": tiny_artifacts(script), "checks": checks or tiny_checks(),
            "notes": "tiny"}


def purpose_of(body: dict) -> str:
    last = (body.get("messages") or [{}])[-1].get("content", "")
    if last.startswith("These artifacts passed every check."):
        return "synthesize"
    if last.startswith("The attempt failed."):
        return "retry"
    if last.startswith("The checks failed; the cluster is live.") or last.startswith("["):
        return "troubleshoot"
    return "design"


def completion(text: str) -> dict:
    return {"id": "chatcmpl-tiny", "object": "chat.completion", "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


Answer = tuple[int, Any]  # (HTTP status, body: dict -> JSON, str -> sent as is)


def tiny_model(body: dict) -> Answer:
    """Design and synthesis answers of the tiny task (the same script both times)."""
    if purpose_of(body) == "synthesize":
        return 200, completion(json.dumps({"artifacts": tiny_artifacts(), "notes": "final"}))
    return 200, completion(json.dumps(design_answer()))


class ModelServer:
    """A chat-completions server on 127.0.0.1; ``answer(body)`` decides each reply."""

    def __init__(self, answer: Callable[[dict], Answer] = tiny_model, delay: float = 0.8):
        self.answer, self.delay = answer, delay
        self.requests: list[dict[str, Any]] = []
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                server.requests.append({"headers": dict(self.headers.items()), "body": body,
                                        "at": time.monotonic()})
                if server.delay and server.closing.wait(server.delay):
                    return
                status, reply = server.answer(body)
                payload = (reply if isinstance(reply, str) else json.dumps(reply)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client went away (stopped run, timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def env(self, key: str = "sk-test-not-a-secret") -> dict[str, str]:
        """Environment for a process that uses this server through ``provider=openai``."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": key,
                "ANTRIEB_MODEL": MODEL, "ANTRIEB_LLM": "openai"}

    def __enter__(self) -> ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# -- processes ------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def is_cluster_process(pid: int) -> bool:
    """A supervisor or a QEMU of antrieb's (QEMU is exec'd through setpriv)."""
    cmd = cmdline(pid)
    return is_supervisor(cmd) or ("qemu-system" in cmd and "antrieb-" in cmd)


def is_supervisor(cmd: str) -> bool:
    """A command line of either driver's supervisor (``python -m antrieb.vm.*.supervisor``)."""
    return "antrieb.vm." in cmd and ".supervisor" in cmd


def cluster_processes(root: int | None = None) -> list[int]:
    """Supervisors and QEMUs below ``root`` (default: this process), alive, not zombies."""
    return [p for p in descendants(root or os.getpid()) if alive(p) and is_cluster_process(p)]


def wait_no_cluster(root: int | None = None, pids: set[int] | None = None,
                    timeout: float = 10.0) -> float | None:
    """Poll until no cluster process is below ``root`` (and none of ``pids`` lives);
    the monotonic time it happened, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    pids = pids or set()
    while True:
        now = time.monotonic()
        if not cluster_processes(root) and not any(alive(p) for p in pids):
            return now
        if now > deadline:
            return None
        time.sleep(0.005)


def run_state(record_dir: str | Path) -> str:
    return json.loads((Path(record_dir) / "run.json").read_text())["state"]
