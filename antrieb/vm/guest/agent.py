#!/usr/bin/python3
"""antrieb guest agent: runs inside every VM, speaks JSON lines on a virtio-serial port.

The resident agent is agentd.c (ping and identity, the critical path of a clone coming
up); it hands every other request to this file (`agent.py --one`). Run without
arguments, this file is a complete agent of its own.

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
    # In place, not temp + rename: fewer journaled metadata operations, and each one is
    # emulated kernel code a fresh clone translates for the first time.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def reseed(entropy):
    """Mix host randomness into the kernel pool, credit it, and force a CRNG reseed."""
    fd = os.open("/dev/random", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
        with contextlib.suppress(OSError):  # older kernels reseed once entropy is credited
            fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


class Netlink:
    """Just enough rtnetlink to move eth0 to a new address without spawning `ip`:
    under emulation a process start costs ~0.3 s, a netlink message microseconds."""

    RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE = 20, 21, 24
    F_REQUEST, F_ACK, F_REPLACE, F_CREATE = 0x1, 0x4, 0x100, 0x400
    SIOCSIFHWADDR, SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8924, 0x8913, 0x8914, 0x1

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.seq = 0

    def close(self):
        self.sock.close()

    @staticmethod
    def attr(kind, payload):
        length = 4 + len(payload)
        return struct.pack("HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)

    def request(self, msg_type, flags, body):
        self.seq += 1
        header = struct.pack("IHHII", 16 + len(body), msg_type, flags | self.F_REQUEST | self.F_ACK,
                             self.seq, 0)
        self.sock.send(header + body)
        reply = self.sock.recv(65536)
        _length, kind, _flags, _seq, _pid, error = struct.unpack("IHHIIi", reply[:20])
        if kind == 2 and error not in (0,):  # NLMSG_ERROR
            raise OSError(-error, f"netlink {msg_type}: {os.strerror(-error)}")

    def address(self, add, index, ip, prefix):
        packed = socket.inet_aton(ip)
        body = struct.pack("BBBBI", socket.AF_INET, prefix, 0, 0, index)
        host_bits = (1 << (32 - prefix)) - 1
        broadcast = struct.pack("!I", struct.unpack("!I", packed)[0] | host_bits)
        # IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST
        body += self.attr(2, packed) + self.attr(1, packed) + self.attr(4, broadcast)
        if add:
            self.request(self.RTM_NEWADDR, self.F_CREATE | self.F_REPLACE, body)
        else:
            self.request(self.RTM_DELADDR, 0, body)

    def default_route(self, index, gateway):
        # rtmsg: family, dst_len, src_len, tos, table main, proto boot, scope universe, unicast
        body = struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
        body += self.attr(5, socket.inet_aton(gateway)) + self.attr(4, struct.pack("I", index))
        self.request(self.RTM_NEWROUTE, self.F_CREATE | self.F_REPLACE, body)

    @classmethod
    def set_mac_and_up(cls, dev, mac):
        hw = bytes.fromhex(mac.replace(":", ""))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            name = dev.encode().ljust(16, b"\0")
            got = fcntl.ioctl(s, cls.SIOCGIFFLAGS, name + b"\0" * 24)
            flags = struct.unpack("16sH", got[:18])[1]
            ifreq = name + struct.pack("H", 1) + hw + b"\0" * 16  # ARPHRD_ETHER
            try:
                fcntl.ioctl(s, cls.SIOCSIFHWADDR, ifreq)
            except OSError:  # a driver without live MAC change: down, change, up
                fcntl.ioctl(s, cls.SIOCSIFFLAGS, name + struct.pack("H", flags & ~cls.IFF_UP)
                            + b"\0" * 22)
                fcntl.ioctl(s, cls.SIOCSIFHWADDR, ifreq)
            fcntl.ioctl(s, cls.SIOCSIFFLAGS, name + struct.pack("H", flags | cls.IFF_UP)
                        + b"\0" * 22)


# The address this VM has now; survives the golden snapshot inside this process, so a
# clone knows what to replace without asking anyone.
CURRENT_ADDRESS = None


def configure_network(net):
    global CURRENT_ADDRESS
    dev = net["dev"]
    Netlink.set_mac_and_up(dev, net["mac"])
    index = socket.if_nametoindex(dev)
    nl = Netlink()
    try:
        if CURRENT_ADDRESS and (net["ip"], net["prefix"]) != CURRENT_ADDRESS:
            with contextlib.suppress(OSError):  # already gone is fine
                nl.address(False, index, *CURRENT_ADDRESS)
        nl.address(True, index, net["ip"], net["prefix"])
        CURRENT_ADDRESS = (net["ip"], net["prefix"])
        nl.default_route(index, net["gateway"])
    finally:
        nl.close()


RUN_DIR = "/run/antrieb"  # tmpfs: identity files that must exist before sshd is asked
STATE_FILE = "/var/lib/antrieb/identity.json"  # the same identity, for after a reboot
PERSIST_AFTER_IDLE = 2.0
pending_persist = None


def apply_identity(req, step=lambda name: None):
    configure_network(req["net"])
    step("network")
    socket.sethostname(req["hostname"])
    # Files a clone needs at once go to tmpfs (/etc/hosts links there; sshd and ssh are
    # configured to look there): the first ext4 write in a fresh clone costs ~40 ms of
    # emulated kernel code, a tmpfs write ~1 ms.
    os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
    write_file(RUN_DIR + "/hosts", req["hosts"])
    ssh = req.get("ssh")
    if ssh:
        write_file(RUN_DIR + "/authorized_keys", ssh["public"] + "\n", 0o600)
        write_file(RUN_DIR + "/id_ed25519", ssh["private"], 0o600)
    step("files")


def op_identity(req):
    global pending_persist
    t0 = time.monotonic()
    steps = {}

    def step(name):
        steps[name] = round(time.monotonic() - t0, 4)

    apply_identity(req, step)
    reseed(base64.b64decode(req["entropy"]))
    with open("/dev/urandom", "rb") as f:
        sample = f.read(16).hex()
    step("entropy")
    # The wall clock last, but before the reply: stepping it wakes every timer watcher
    # in the guest (systemd first), which would otherwise compete with the steps above.
    time.clock_settime(time.CLOCK_REALTIME, float(req["time"]) + (time.monotonic() - t0))
    step("clock")
    if req.get("persist", True):
        pending_persist = {k: v for k, v in req.items()
                           if k not in ("entropy", "time", "id", "op")}
    return {"seconds": time.monotonic() - t0, "random": sample, "time": time.time(),
            "steps": steps}


def persist_identity():
    """Once idle: keep the identity on disk so a rebooted VM comes back as itself."""
    global pending_persist
    req, pending_persist = pending_persist, None
    os.makedirs(os.path.dirname(STATE_FILE), mode=0o700, exist_ok=True)
    write_file(STATE_FILE, json.dumps(req), 0o600)
    write_file("/etc/hostname", req["hostname"] + "\n")


def restore_identity_at_boot():
    os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
    try:
        with open(STATE_FILE) as f:
            req = json.load(f)
    except (OSError, ValueError):
        if not os.path.exists(RUN_DIR + "/hosts"):
            write_file(RUN_DIR + "/hosts", "127.0.0.1 localhost\n")
        return
    with contextlib.suppress(Exception):  # a broken state file must not stop the agent
        apply_identity(req)


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
    restore_identity_at_boot()
    fd = os.open(find_port(), os.O_RDWR | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while True:
        if not poller.poll(PERSIST_AFTER_IDLE * 1000 if pending_persist else 1000):
            if pending_persist:
                with contextlib.suppress(OSError):
                    persist_identity()
            continue
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:  # host side not connected: poll reports HUP, wait a bit
            if pending_persist:
                with contextlib.suppress(OSError):
                    persist_identity()
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
    import sys

    if sys.argv[1:] == ["--one"]:  # agentd hands over requests it does not handle itself
        sys.stdout.write(json.dumps(handle(sys.stdin.buffer.read())) + "\n")
    else:
        main()
