"""A process that runs tiny convergence runs one after the other in its main thread and
reports every event as a JSON line on stdout, so a test can interrupt it (SIGINT) at a
chosen moment and see what it recorded. The model is the OpenAI-compatible server named
by OPENAI_BASE_URL. With ANTRIEB_CHILD_WAIT set it starts each run on a line on stdin (so
a test can start it ahead, imports done). Usage: python -m tests.reliability.stop_child N
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from antrieb import events
from antrieb.converge import Converger, Task
from tests.reliability.harness import tiny_task


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps({"t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def main(rounds: int) -> int:
    # The test interrupts us with SIGINT: make it a KeyboardInterrupt even if we inherited
    # SIGINT ignored (as everything started in the background of a non-interactive shell
    # does, a CI run for one), in which case Python installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for _ in range(rounds):
        if os.environ.get("ANTRIEB_CHILD_WAIT"):  # started ahead of time: wait for "go"
            say(kind="ready")
            if not sys.stdin.readline():
                return 0
        conv = Converger(Task.model_validate(tiny_task()), provider="openai")
        say(kind="converger", run_id=conv.run_id, record=str(conv.recorder.dir))
        with events.subscribed(lambda e: say(kind=e.kind, cmd=getattr(e, "command", "")[:40])):
            try:
                result = conv.run()
            except BaseException as exc:  # a run must never raise: report it
                say(kind="escaped", error=f"{type(exc).__name__}: {exc}")
                return 1
        say(kind="done", status=result.status, reason=result.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
