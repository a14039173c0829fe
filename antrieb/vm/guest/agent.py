#!/usr/bin/python3
"""antrieb guest agent: runs inside every VM, speaks JSON lines on a virtio-serial port.

Started in the golden VM before its snapshot, so every clone wakes up with it already
running. On restore the host sends one ``identity`` request that makes the clone
itself: MAC, IP, hostname, /etc/hosts of the cluster, wall clock, fresh entropy and
the cluster's SSH key. Stdlib only, one process, no per-request interpreter start:
under emulation every new process costs tens of milliseconds.
"""

import base64
import contextlib
import fcntl
import glob
import json
import os
import select
import socket
import struct
import subprocess
import time

PORT_NAME = "agent"
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
OUTPUT_CAP = 64 * 1024


def find_port():
    while True:
        for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
            with open(name_file) as f:
                if f.read().strip() == PORT_NAME:
                    dev = "/dev/" + name_file.split("/")[-2]
                    if os.path.exists(dev):
                        return dev
        time.sleep(0.05)


def write_file(path, data, mode=0o644):
    tmp = path + ".antrieb-tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def reseed(entropy):
    """Mix host randomness into the kernel pool, credit it, and force a CRNG reseed."""
    fd = os.open("/dev/random", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
        with contextlib.suppress(OSError):  # older kernels reseed once entropy is credited
            fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


def op_identity(req):
    t0 = time.monotonic()
    # The clock first: everything after (logs, apt's Release validity) wants the right time.
    time.clock_settime(time.CLOCK_REALTIME, float(req["time"]) + (time.monotonic() - t0))
    reseed(base64.b64decode(req["entropy"]))
    net = req["net"]
    batch = (
        f"link set {net['dev']} down\n"
        f"link set {net['dev']} address {net['mac']}\n"
        f"addr flush dev {net['dev']}\n"
        f"addr add {net['ip']}/{net['prefix']} dev {net['dev']}\n"
        f"link set {net['dev']} up\n"
        f"route replace default via {net['gateway']} dev {net['dev']}\n"
    )
    p = subprocess.run(["ip", "-batch", "-"], input=batch, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("ip: " + p.stderr.strip())
    socket.sethostname(req["hostname"])
    write_file("/etc/hostname", req["hostname"] + "\n")
    write_file("/etc/hosts", req["hosts"])
    ssh = req.get("ssh")
    if ssh:
        os.makedirs("/root/.ssh", mode=0o700, exist_ok=True)
        write_file("/root/.ssh/authorized_keys", ssh["public"] + "\n", 0o600)
        write_file("/root/.ssh/id_ed25519", ssh["private"], 0o600)
        write_file("/root/.ssh/id_ed25519.pub", ssh["public"] + "\n", 0o644)
    with open("/dev/urandom", "rb") as f:
        sample = f.read(16).hex()
    return {"seconds": time.monotonic() - t0, "random": sample, "time": time.time()}


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
    "identity": op_identity,
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


def main():
    fd = os.open(find_port(), os.O_RDWR | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while True:
        poller.poll(1000)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:  # host side not connected: poll reports HUP, wait a bit
            time.sleep(0.02)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                out = (json.dumps(handle(line)) + "\n").encode()
                while out:
                    try:
                        out = out[os.write(fd, out):]
                    except BlockingIOError:
                        select.select([], [fd], [], 1)


if __name__ == "__main__":
    main()
