#!/usr/bin/python3
"""antrieb guest agent, the slow path: requests agentd (agentd.c) hands over.

agentd is the resident agent on the virtio-serial port: it answers `ping` and
`identity` itself, the critical path of a clone coming up, and runs
`agent.py --one` with any other request on stdin (exec, wait_boot, sync): none of
them is on a critical path, and Python keeps them short and testable.
"""

import json
import os
import subprocess
import sys

OUTPUT_CAP = 64 * 1024


def op_exec(req):
    p = subprocess.run(
        req["cmd"], shell=True, capture_output=True, timeout=req.get("timeout", 60)
    )
    return {
        "rc": p.returncode,
        "out": p.stdout[-OUTPUT_CAP:].decode(errors="replace"),
        "err": p.stderr[-OUTPUT_CAP:].decode(errors="replace"),
    }


def op_wait_boot(req):
    p = subprocess.run(
        ["systemctl", "is-system-running", "--wait"], capture_output=True, text=True,
        timeout=req.get("timeout", 300),
    )
    return {"state": p.stdout.strip()}


def op_sync(req):
    os.sync()
    return {}


OPS = {
    "ping": lambda req: {},
    "exec": op_exec,
    "wait_boot": op_wait_boot,
    "sync": op_sync,
}


def handle(line):
    try:
        req = json.loads(line)
    except ValueError as exc:
        return {"id": None, "ok": False, "error": f"bad json: {exc}"}
    try:
        result = OPS[req["op"]](req)
        return {"id": req.get("id"), "ok": True, **result}
    except Exception as exc:
        return {"id": req.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    if sys.argv[1:] != ["--one"]:
        sys.exit("usage: agent.py --one  (one JSON request on stdin, its reply on stdout)")
    sys.stdout.write(json.dumps(handle(sys.stdin.buffer.read())) + "\n")
