"""Linux namespaces for one cluster: private mounts (a tmpfs for overlays and consoles)
and a private network (a bridge, one tap per VM). The kernel reaps both when the last
process inside exits, which is what makes ``kill -9`` of the owner leave nothing behind.

Network namespaces are per *thread*: after :func:`enter_private_network` only the
calling thread (and what it starts later) sits in the cluster's network; threads started
before stay in the host's. The supervisor relies on that for its apt proxy.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

from antrieb.vm.net import plan as netplan

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID = 2
MS_NODEV = 4

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                    ctypes.c_ulong(flags), data.encode() if data else None),
        f"mount {target}",
    )


def enter_private_mounts(runtime_dir: str, tmpfs_size: str = "50%") -> None:
    """New mount namespace (and user namespace when not root) with a tmpfs on runtime_dir.

    Must run while the process is single-threaded (the kernel refuses otherwise).
    """
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        unshare(CLONE_NEWNS)
    else:
        unshare(CLONE_NEWUSER | CLONE_NEWNS)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    mount("antrieb", runtime_dir, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,size={tmpfs_size}")


def enter_private_network() -> None:
    """Move the calling thread into a new network namespace with the cluster bridge up."""
    unshare(CLONE_NEWNET)
    ip_batch(
        [
            "link set lo up",
            "link add br0 type bridge",
            f"addr add {netplan.GATEWAY_IP}/{netplan.PREFIX} dev br0",
            "link set br0 up",
        ]
    )


def add_taps(names: list[str]) -> None:
    cmds = []
    for tap in names:
        cmds += [f"tuntap add dev {tap} mode tap", f"link set {tap} master br0",
                 f"link set {tap} up"]
    ip_batch(cmds)


def remove_taps(names: list[str]) -> None:
    if names:
        ip_batch([f"link del {tap}" for tap in names], check=False)


def ip_batch(commands: list[str], check: bool = True) -> None:
    p = subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n",
                       capture_output=True, text=True)
    if check and p.returncode != 0:
        raise OSError(f"ip -batch failed: {p.stderr.strip()}")
