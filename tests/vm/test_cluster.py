"""Real clusters of real VMs: identity, SSH, limits, isolation, teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from antrieb import config, events
from antrieb.errors import StateError
from antrieb.vm.supervisor_client import wait_gone
from tests.timebounds import within

from .conftest import (
    ALL_DRIVERS,
    LIBVIRT_VARIANTS,
    libvirt_domains,
    mount_namespaces,
    net_namespaces,
    qemu_pids,
)

# The guarantees every driver must give run on each driver variant (the libvirt driver
# embedded and against a real libvirtd); the rest exercise shared code (SSH layer, apt
# proxy, namespaces) and run on the qemu driver only, to keep the tier's cost down.
each_driver = pytest.mark.parametrize("driver_variant", ALL_DRIVERS, indirect=True)
embedded_too = pytest.mark.parametrize("driver_variant", ["qemu", "libvirt-embed"],
                                       indirect=True)


@each_driver
def test_three_nodes_distinct_identity_and_ssh_by_name(cluster_factory):
    seen: list[events.Event] = []
    with events.subscribed(seen.append):
        cluster = cluster_factory(nodes=3)
    info = cluster.run_all(
        "echo $(hostname) $(ip -4 -o addr show eth0 | awk '{print $4}') "
        "$(cat /sys/class/net/eth0/address) $(date +%s) $(head -c8 /dev/urandom | od -An -tx1 "
        "| tr -d ' ')", timeout=60)
    rows = {name: r.stdout.split() for name, r in info.items()}
    assert all(r.ok for r in info.values()), info
    # the connection that found sshd answering became the first session: the guest
    # logged no connection dropped before the SSH handshake (emulated work while the
    # other nodes still came up)
    sshd = cluster["node1"].run("journalctl -b _COMM=sshd _HOSTNAME=node1 -o cat --no-pager",
                                timeout=60)
    assert "Accepted publickey" in sshd.stdout, sshd
    assert "kex_exchange_identification" not in sshd.stdout, sshd.stdout
    for node in cluster:
        host, cidr, mac, clock, _rand = rows[node.name]
        assert host == node.name
        assert cidr == f"{node.ip}/24"
        assert mac == node.plan.mac
        assert abs(int(clock) - time.time()) < 5, "clock not set on restore"
    assert len({r[4] for r in rows.values()}) == 3, "RNG state shared between clones"
    assert len({t["random"] for t in cluster.timings["nodes"].values()}) == 3
    # guest RAM is the golden's, copy-on-write (both drivers): a clone's own memory is
    # what it changed since its restore
    for name, stat in cluster.driver.stats().items():
        own = stat["memory"].get("Anonymous", 0) / (stat["mem_mb"] << 20)
        assert own < 0.3, f"{name}: {own:.2f} of its RAM is its own"
    # every node reaches the next by name with the cluster key (what Ansible needs)
    for i, node in enumerate(cluster):
        peer = cluster.nodes[(i + 1) % 3]
        r = node.run(f"ssh -o BatchMode=yes {peer.name} cat /etc/hostname", timeout=90)
        assert r.ok and r.stdout.strip() == peer.name, r
    hosts = cluster["node1"].get("/etc/hosts").decode()
    for node in cluster:
        assert f"{node.ip} {node.name}" in hosts
    kinds = [e.kind for e in seen]
    assert "cluster_ready" in kinds and "vm_state" in kinds
    states = [e.state for e in seen if isinstance(e, events.ClusterStateChanged)]
    assert states[-1] is events.ClusterState.READY


def test_run_limits_files_and_parallel(cluster_factory):
    cluster = cluster_factory(nodes=2)
    node = cluster["node1"]
    r = node.run("echo out; echo err >&2; exit 3")
    assert (r.exit_status, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert not r.truncated and not r.timed_out and r.seconds > 0

    t0 = time.monotonic()
    r = node.run("sleep 600", timeout=3)
    assert r.timed_out and r.exit_status is None
    assert time.monotonic() - t0 < 15
    assert node.run("pgrep -x sleep || echo none").stdout.strip() == "none"

    r = node.run("yes", timeout=8, output_cap=64 * 1024)
    assert r.truncated and r.timed_out
    assert len(r.stdout) < 70 * 1024

    node.put("/tmp/payload.bin", bytes(range(256)) * 10, mode=0o600)
    assert node.get("/tmp/payload.bin") == bytes(range(256)) * 10
    assert node.run("stat -c %a /tmp/payload.bin").stdout.strip() == "600"

    results = cluster.run_all("sleep 2; hostname", timeout=60)
    assert {k: v.stdout.strip() for k, v in results.items()} == {"node1": "node1",
                                                                   "node2": "node2"}


def test_packages_come_through_the_proxy_and_the_cache(cluster_factory):
    log = config.cache_dir() / "apt-cache" / "access.log"
    start = log.stat().st_size if log.exists() else 0
    pkg = "sl"  # small, not in the image
    for _ in range(2):
        cluster = cluster_factory(nodes=1)
        # a fresh server: its package lists come first, through the proxy too
        r = cluster["node1"].run("apt-get update -q && DEBIAN_FRONTEND=noninteractive "
                                 f"apt-get install -y -q {pkg}", timeout=300)
        assert r.ok, r.stdout[-2000:] + r.stderr[-2000:]
        assert cluster["node1"].run("test -x /usr/games/sl").ok
        cluster.down()
    with open(log) as f:
        f.seek(start)
        lines = [json.loads(line) for line in f if f"/{pkg}_" in line]
    debs = [entry for entry in lines if entry["path"].endswith(".deb")]
    assert len(debs) == 2, lines
    assert debs[-1]["cache"] == "HIT", debs  # the second cluster got it from the cache


@embedded_too
def test_nothing_else_leaves_the_cluster(cluster_factory):
    cluster = cluster_factory(nodes=1)
    node = cluster["node1"]
    # Only the apt proxy listens on the gateway, and it serves only the Debian archives.
    r = node.run("curl -sS -m 5 -o /dev/null -w '%{http_code}' "
                 "-x http://gateway:3142 http://example.invalid/")
    assert r.stdout.strip() == "403", r
    r = node.run("curl -sS -m 5 -x http://gateway:3142 -p https://example.invalid/ || true")
    assert "403" in r.stdout + r.stderr or "CONNECT" in r.stderr, r
    assert not node.run("timeout 5 bash -c 'echo > /dev/tcp/gateway/22'").ok
    # No route leaves the namespace: a documentation address (TEST-NET-1) is unreachable.
    assert not node.run("timeout 5 bash -c 'echo > /dev/tcp/192.0.2.1/80'").ok


def test_two_clusters_do_not_see_each_other(cluster_factory):
    a = cluster_factory(nodes=1)
    b = cluster_factory(nodes=2)
    assert b["node1"].run("timeout 10 bash -c 'echo > /dev/tcp/node2/22'").ok
    # a has no node2: the same address is nobody there, b's node2 is invisible
    assert not a["node1"].run("timeout 5 bash -c 'echo > /dev/tcp/10.77.0.12/22'").ok
    pa, pb = a.driver.supervisor_pid(), b.driver.supervisor_pid()
    assert os.readlink(f"/proc/{pa}/ns/net") != os.readlink(f"/proc/{pb}/ns/net")


@each_driver
def test_teardown_leaves_nothing(cluster_factory, driver_variant, driver_env):
    # Only this cluster's own processes and namespace are checked: other clusters (other
    # tests, other users of the machine) may come and go meanwhile.
    before_shm = set(os.listdir("/dev/shm"))
    cluster = cluster_factory(nodes=2)
    stats = cluster.driver.stats()
    pids = {stats[n]["pid"] for n in ("node1", "node2")}
    mine = {f"antrieb-{cluster.id}-node1", f"antrieb-{cluster.id}-node2"}
    if driver_variant in LIBVIRT_VARIANTS:
        # libvirt domains, labelled with the cluster and the role, listed by the libvirt
        assert mine <= set(cluster.driver.domains())
        assert f"<antrieb:cluster>{cluster.id}</antrieb:cluster>" in stats["node1"]["xml"]
        assert "<antrieb:role>node</antrieb:role>" in stats["node1"]["xml"]
        assert "machine='pc-q35" in stats["node1"]["xml"]
    sup = cluster.driver.supervisor_pid()
    cluster_ns = os.readlink(f"/proc/{sup}/ns/net")
    cluster_mnt = os.readlink(f"/proc/{sup}/ns/mnt")
    assert pids <= qemu_pids()
    cluster.down()
    within("libvirt cluster teardown", cluster.timings["teardown_s"], goal=1.0, bound=20)
    assert wait_gone(sup, 5)
    assert all(wait_gone(p, 5) for p in pids)
    assert cluster_ns not in net_namespaces()
    assert cluster_mnt not in mount_namespaces(), "the tmpfs of overlays outlived the cluster"
    assert set(os.listdir("/dev/shm")) <= before_shm
    runtime = str(config.cache_dir() / "runtime")
    assert f" {runtime} " not in Path("/proc/self/mounts").read_text()
    assert not os.listdir(runtime), "overlays or consoles left on the host"
    with pytest.raises(StateError):
        cluster["node1"].run("true")
    if driver_variant == "libvirt-system":  # undefined and gone from the libvirtd too
        assert not mine & set(libvirt_domains(driver_env["ANTRIEB_LIBVIRT_URI"]))


@embedded_too
def test_kill_9_of_the_supervisor_leaves_no_vm(cluster_factory):
    """The supervisor itself killed (out of memory, say): the qemu driver's QEMUs die with
    it (death signal); an embedded libvirt's are daemonized, and the owner kills them."""
    cluster = cluster_factory(nodes=2)
    pids = {s["pid"] for s in cluster.driver.stats().values()}
    assert len(pids) == 2 and pids <= qemu_pids()
    os.kill(cluster.driver.supervisor_pid(), signal.SIGKILL)
    assert all(wait_gone(p, 5) for p in pids), f"{pids & qemu_pids()} outlived the supervisor"
    cluster.down()


@embedded_too
def test_kill_9_of_the_supervisor_during_launch_leaves_no_vm(debian12, driver_env,
                                                             monkeypatch):
    """Killed while its QEMUs were still coming up, before the launch reported their pids:
    whatever is left in the cluster's network namespace goes."""
    import threading

    from antrieb import Cluster
    from antrieb.vm.procfs import pids_in_namespace

    for key, value in driver_env.items():
        monkeypatch.setenv(key, value)
    cluster = Cluster(nodes=2)
    failed: list[BaseException] = []

    def up() -> None:
        try:
            cluster.up()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=up)
    thread.start()
    found: set[int] = set()
    deadline = time.monotonic() + 120
    while not found and thread.is_alive() and time.monotonic() < deadline:
        sup = cluster.driver.supervisor_pid()
        if sup:
            try:
                netns = os.readlink(f"/proc/{sup}/ns/net")
            except OSError:
                netns = ""
            if netns and netns != os.readlink("/proc/self/ns/net"):
                found = set(pids_in_namespace("net", netns)) & qemu_pids()
        time.sleep(0.005)
    assert found, "no QEMU of the cluster seen while it came up"
    os.kill(cluster.driver.supervisor_pid(), signal.SIGKILL)
    thread.join(60)
    assert failed, "the launch had already finished: nothing tested"
    assert all(wait_gone(p, 5) for p in found), f"{found & qemu_pids()} outlived the supervisor"
    cluster.down()


def test_exception_and_interrupt_inside_with_tear_down(debian12):
    from antrieb import Cluster

    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), Cluster(nodes=1) as cluster:
            sup = cluster.driver.supervisor_pid()
            raise exc
        assert cluster.state.value == "down"
        assert wait_gone(sup, 5)


@each_driver
def test_kill_9_of_the_owner_leaves_nothing(debian12, driver_variant, driver_env):
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, time
        from antrieb import Cluster
        c = Cluster(nodes=2).up()
        pids = [s["pid"] for s in c.driver.stats().values()]
        print(json.dumps({"sup": c.driver.supervisor_pid(), "qemu": pids, "id": c.id}),
              flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, **driver_env})
    try:
        info = json.loads(owner.stdout.readline())
        assert all(info["qemu"]) and len(info["qemu"]) == 2, info
        ns = os.readlink(f"/proc/{info['sup']}/ns/net")
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        for pid in [info["sup"], *info["qemu"]]:
            assert wait_gone(pid, 5), f"pid {pid} survived its owner"
        deadline = time.monotonic() + 5
        while ns in net_namespaces() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ns not in net_namespaces()
        if driver_variant == "libvirt-system":
            names = set(libvirt_domains(driver_env["ANTRIEB_LIBVIRT_URI"]))
            assert not {n for n in names if n.startswith(f"antrieb-{info['id']}-")}, names
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
