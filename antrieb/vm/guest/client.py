"""Host side of the guest agent: JSON lines over the VM's virtio-serial socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any


class AgentError(Exception):
    pass


class AgentClient:
    """Request/response over a connected socket; one request at a time."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._next_id = 0
        self._lock = threading.Lock()

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            req_id = self._next_id
            self._sock.settimeout(timeout)
            self._sock.sendall((json.dumps({"id": req_id, "op": op, **args}) + "\n").encode())
            deadline = time.monotonic() + timeout
            while True:
                while b"\n" not in self._buf:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"agent did not answer {op!r} in {timeout:.0f}s")
                    self._sock.settimeout(remaining)
                    try:
                        chunk = self._sock.recv(65536)
                    except TimeoutError:
                        raise TimeoutError(
                            f"agent did not answer {op!r} in {timeout:.0f}s") from None
                    if not chunk:
                        raise AgentError("agent connection closed (VM gone?)")
                    self._buf += chunk
                line, self._buf = self._buf.split(b"\n", 1)
                reply = json.loads(line)
                if reply.get("id") == req_id:
                    if not reply.get("ok"):
                        raise AgentError(reply.get("error", "agent error"))
                    return reply
                # replies to requests that timed out earlier are dropped

    def close(self) -> None:
        self._sock.close()
