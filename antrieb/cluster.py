"""Clusters of up to four throw-away VMs, and their nodes.

Example::

    from antrieb import Cluster

    with Cluster(nodes=3, image="debian-12") as cluster:
        for name, result in cluster.run_all("hostname -I").items():
            print(name, result.stdout.strip())
        cluster["node1"].run("ssh node2 true").ok   # nodes reach each other by name

Every input is checked before anything starts; every way out of ``with`` (normal exit,
exception, Ctrl-C) tears the cluster down; ``kill -9`` of this process takes the VMs
with it (see :mod:`antrieb.vm.supervisor`).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from antrieb import events
from antrieb.errors import (
    AntriebError,
    ConfigError,
    StateError,
)
from antrieb.events import ClusterState, VMState
from antrieb.nodespec import NodeSpec, as_specs
from antrieb.ssh import ClusterKey, NodeSession, Result
from antrieb.vm.driver import Driver, NodePlan, get_driver
from antrieb.vm.net import plan as netplan
from antrieb.vm.spec import Identity


class Node:
    """One running VM of a cluster, reached over SSH."""

    def __init__(self, cluster: Cluster, plan: NodePlan, session: NodeSession):
        self.cluster, self.plan, self._session = cluster, plan, session
        self.state = VMState.PENDING
        self.os_release = ""

    name = property(lambda self: self.plan.name)
    role = property(lambda self: self.plan.role)
    image = property(lambda self: self.plan.image)
    ip = property(lambda self: self.plan.ip)

    def run(self, command: str, timeout: float = 600.0, *, check: bool = False,
            output_cap: int | None = None) -> Result:
        """Run a shell command as root; ``check=True`` raises CommandFailed on non-zero."""
        from antrieb.errors import CommandFailed

        self.cluster._require(ClusterState.READY, "run a command")
        kwargs = {"output_cap": output_cap} if output_cap else {}
        result = self._session.run(command, timeout=timeout, **kwargs)
        events.emit(events.CommandFinished(
            cluster=self.cluster.id, node=self.name, command=command,
            exit_status=result.exit_status, seconds=result.seconds,
            truncated=result.truncated, timed_out=result.timed_out))
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write a file on the node (SFTP over the node's SSH transport)."""
        self.cluster._require(ClusterState.READY, "put a file")
        self._session.put(path, data, mode)

    def get(self, path: str) -> bytes:
        """Read a file from the node."""
        self.cluster._require(ClusterState.READY, "get a file")
        return self._session.get(path)

    def console(self) -> str:
        """The tail of this node's serial console (for diagnosis)."""
        return self.cluster.driver.console(self.name)

    def __repr__(self) -> str:
        return f"<Node {self.name} role={self.role} ip={self.ip} {self.state.value}>"


class Cluster:
    """A context-managed cluster of 1-4 VMs in a private network.

    ``nodes`` is a count (named node1..nodeN) or a list of names, dicts or
    :class:`NodeSpec` (name, role, image). Errors in the input raise
    :class:`~antrieb.errors.ConfigError` subclasses before anything starts.
    """

    def __init__(self, nodes: int | Sequence[NodeSpec | dict | str] = 1,
                 image: str = "debian-12", *, driver: str | Driver | None = None,
                 memory: int = 512, cpus: int = 1, name: str | None = None,
                 keep: bool = False):
        from antrieb.vm import saved
        from antrieb.vm.images import get_recipe

        self.specs = as_specs(nodes, image)
        for spec in self.specs:  # UnknownImageError before anything starts
            saved.exists(spec.image) or get_recipe(spec.image)
        self.keep = keep  # published for `antrieb cluster list|exec|down` (antrieb.kept)
        if not 128 <= memory <= 16384:
            raise ConfigError(f"memory must be 128..16384 MiB, not {memory}")
        if not 1 <= cpus <= 8:
            raise ConfigError(f"cpus must be 1..8, not {cpus}")
        self.id = name or f"c{secrets.token_hex(3)}"
        self.driver: Driver = (driver if driver is not None and not isinstance(driver, str)
                               else get_driver(driver, mem_mb=memory, cpus=cpus))
        self.state = ClusterState.NEW
        self.plans = [
            NodePlan(name=s.name, role=s.role, image=s.image, index=i,
                     ip=netplan.node_ip(i), mac=netplan.node_mac(i))
            for i, s in enumerate(self.specs)
        ]
        self.nodes: list[Node] = []
        self.timings: dict[str, Any] = {}
        self._key: ClusterKey | None = None
        self._lock = threading.RLock()

    # -- state ------------------------------------------------------------------

    def _set_state(self, state: ClusterState, detail: str = "") -> None:
        previous, self.state = self.state, state
        events.emit(events.ClusterStateChanged(cluster=self.id, state=state, previous=previous,
                                               detail=detail))

    def _require(self, state: ClusterState, what: str) -> None:
        if self.state is not state:
            raise StateError(f"cluster {self.id}", self.state.value,
                             f"{state.value} to {what}")

    def _set_vm_state(self, node: Node, state: VMState, detail: str = "") -> None:
        node.state = state
        events.emit(events.VMStateChanged(cluster=self.id, node=node.name, state=state,
                                          ip=node.ip, detail=detail))

    # -- lifecycle ----------------------------------------------------------------

    def hosts_file(self) -> str:
        lines = ["127.0.0.1 localhost", f"{netplan.GATEWAY_IP} gateway"]
        lines += [f"{p.ip} {p.name}" for p in self.plans]
        return "\n".join(lines) + "\n"

    def up(self) -> Cluster:
        """Start every node: ready means identity applied and sshd answering."""
        with self._lock:
            self._require(ClusterState.NEW, "start")
            self._set_state(ClusterState.STARTING)
            try:
                self._up()
                if self.keep:
                    from antrieb import kept
                    kept.publish(self)
            except BaseException as exc:
                self._teardown(kill=True)
                self._set_state(ClusterState.FAILED, detail=f"{type(exc).__name__}: {exc}")
                raise
        return self

    def _up(self) -> None:
        t0 = time.monotonic()
        self.driver.prepare({p.image for p in self.plans})
        prepared = time.monotonic()
        self._key = ClusterKey()
        hosts = self.hosts_file()
        # Each node its own host key and machine-id, as freshly installed servers have;
        # known_hosts lets nodes (and our sessions) check them. A node saved by a user
        # (save_node) keeps its apt lists: its state is the point of saving it.
        from antrieb.vm import saved

        host_keys = {p.name: ClusterKey(comment=f"root@{p.name}") for p in self.plans}
        known_hosts = "".join(
            f"{p.name},{p.ip} {' '.join(host_keys[p.name].public_openssh.split()[:2])}\n"
            for p in self.plans)
        identities = [
            Identity(hostname=p.name, ip=p.ip, prefix=netplan.PREFIX,
                     gateway=netplan.GATEWAY_IP, mac=p.mac, hosts=hosts,
                     ssh_public=self._key.public_openssh, ssh_private=self._key.private_openssh,
                     machine_id=secrets.token_hex(16),
                     host_key_private=host_keys[p.name].private_openssh,
                     host_key_public=host_keys[p.name].public_openssh,
                     known_hosts=known_hosts, fresh_apt=not saved.exists(p.image))
            for p in self.plans
        ]
        self.machine_ids = {i.hostname: i.machine_id for i in identities}
        self.nodes = []
        for plan in self.plans:
            session = NodeSession(plan.name, self._connector(plan.ip), self._key,
                                  host_key=host_keys[plan.name].public_openssh)
            node = Node(self, plan, session)
            self.nodes.append(node)
            self._set_vm_state(node, VMState.RESTORING)
        launched = time.monotonic()
        if hasattr(self.driver, "cluster_id"):  # drivers that label what they start
            self.driver.cluster_id = self.id
        node_timings = self.driver.start(self.plans, identities)
        ready = time.monotonic()
        for node in self.nodes:
            self._set_vm_state(node, VMState.RUNNING)
        self.timings = {
            "prepare_s": prepared - t0,
            "cluster_ready_s": ready - launched,
            "nodes": node_timings,
        }
        self._set_state(ClusterState.READY)
        events.emit(events.ClusterReady(
            cluster=self.id, driver=self.driver.name, accel=self.driver.accel,
            nodes={n.name: n.ip for n in self.nodes}, seconds=ready - launched,
            node_seconds={k: v.get("ssh", 0.0) for k, v in node_timings.items()}))

    def _connector(self, ip: str):
        return lambda: self.driver.connect(ip, 22)

    def down(self) -> None:
        """Stop every node and free everything. Idempotent; from another thread while
        ``up()`` runs, it kills the start at once (``up()`` then fails and rolls back)."""
        if not self._lock.acquire(blocking=False):
            # up() holds the lock for seconds (restore, identity, sshd): waiting for it
            # would keep a stopped cluster alive that long. Killed, it fails fast instead.
            self.driver.kill()
            self._lock.acquire()
        try:
            if self.state in (ClusterState.DOWN, ClusterState.NEW):
                if self.state is ClusterState.NEW:
                    self._set_state(ClusterState.DOWN)
                return
            self._set_state(ClusterState.STOPPING)
            t0 = time.monotonic()
            try:
                self._teardown(kill=False)
            except BaseException:
                self._teardown(kill=True)
                raise
            finally:
                self.timings["teardown_s"] = time.monotonic() - t0
                self._set_state(ClusterState.DOWN)
        finally:
            self._lock.release()

    def _teardown(self, kill: bool) -> None:
        if self.keep:
            from antrieb import kept
            kept.withdraw(self.id)
        # VMs first: a session closing can wait on a half-done SSH handshake, and a
        # stopped cluster must not run on meanwhile
        try:
            if kill:
                self.driver.kill()
            else:
                self.driver.stop()
        finally:
            for node in self.nodes:
                with contextlib.suppress(Exception):
                    node._session.close()
        for node in self.nodes:
            if node.state is not VMState.STOPPED:
                self._set_vm_state(node, VMState.STOPPED)

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.state is not ClusterState.DOWN:
            with self._lock:
                self._set_state(ClusterState.STOPPING, detail=exc_type.__name__)
                try:
                    self._teardown(kill=True)
                finally:
                    self._set_state(ClusterState.DOWN)
        else:
            self.down()

    def reboot(self, timeout: float | None = None) -> dict[str, float]:
        """Reboot every node for real, as an administrator would (``systemctl reboot``):
        the guest shuts down and its kernel boots again from the node's own disk, which
        keeps the node's name and address. Returns each node's seconds from the reboot
        command to sshd answering again. Under TCG that is a cold boot (15-30 s)."""
        self._require(ClusterState.READY, "reboot")
        from antrieb.vm.golden import reboot_timeout

        timeout = timeout or reboot_timeout(self.driver.accel)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            before = dict(zip([n.name for n in self.nodes],
                              pool.map(lambda n: self.driver.boot_id(n.name), self.nodes),
                              strict=True))
        t0 = time.monotonic()

        def ask(node: Node) -> None:
            # the connection may drop before an answer comes: that is the reboot
            with contextlib.suppress(AntriebError):
                node._session.run("systemctl reboot", timeout=30)
            node._session.drop()
            self._set_vm_state(node, VMState.BOOTING, "rebooting")

        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(ask, self.nodes))
        asked = time.monotonic() - t0
        done = self.driver.await_boot({n.name: (n.ip, before[n.name]) for n in self.nodes},
                                      timeout)
        for node in self.nodes:
            self._set_vm_state(node, VMState.RUNNING, "rebooted")
        return {name: asked + timings["ssh_s"] for name, timings in done.items()}

    # -- nodes --------------------------------------------------------------------

    def __getitem__(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in cluster {self.id}; nodes: "
                       f"{', '.join(p.name for p in self.plans)}")

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.plans)

    def run_all(self, command: str, timeout: float = 600.0,
                nodes: Sequence[str] | None = None) -> dict[str, Result]:
        """Run one command on every node (or the named ones) in parallel."""
        self._require(ClusterState.READY, "run a command")
        chosen = [self[n] for n in nodes] if nodes else self.nodes
        # no `with`: on Ctrl-C the caller gets control now (and tears the cluster down,
        # which ends the commands), not after every command has finished
        pool = ThreadPoolExecutor(len(chosen))
        try:
            futures = {n.name: pool.submit(events.carry(n.run), command, timeout)
                       for n in chosen}
            return {name: f.result() for name, f in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def save_node(self, node: str, image: str) -> dict[str, Any]:
        """Save a running node's disk and memory as a new image that later clusters can
        name (``Cluster(nodes=[{"name": "w", "image": image}])``); returns its manifest.
        Example: ``cluster.save_node("web1", "web-ready")``"""
        self._require(ClusterState.READY, "save a node")
        origin = {"cluster": self.id, "node": node, "image": self[node].image}
        return self.driver.save_node(node, image, origin)

    def consoles(self) -> dict[str, str]:
        """The serial console tail of every node (for diagnosis after a failure)."""
        out = {}
        for plan in self.plans:
            try:
                out[plan.name] = self.driver.console(plan.name)
            except AntriebError as exc:
                out[plan.name] = f"(console unavailable: {exc})"
        return out

    def __repr__(self) -> str:
        nodes = ", ".join(f"{p.name}={p.ip}" for p in self.plans)
        return f"<Cluster {self.id} {self.state.value} [{nodes}]>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """In a notebook: a compact live widget and a static HTML table (nbconvert, code
        hosts). Rendering lives in antrieb.notebook; loaded only when displayed."""
        from antrieb.notebook.cluster_view import cluster_bundle

        return cluster_bundle(self)
