"""An in-memory cluster twin for the converge loop: nodes answer from a scripted world.

The world sees every command a node is asked to run, and the scripts put on it, and
answers like the real thing would (exit status, output). It is how the loop, its
budgets, stop and replay are tested without VMs; tests/vm/test_converge.py runs the
same code on real VMs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from antrieb.converge.models import Topology
from antrieb.ssh import Result

Answer = tuple[int | None, str, str]
_SCRIPT = re.compile(r"bash /root/antrieb/([\w-]+)\.sh")


class FakeNode:
    def __init__(self, cluster: FakeCluster, name: str, role: str) -> None:
        self.cluster, self.name, self.role = cluster, name, role
        self.files: dict[str, str] = {}
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 600.0, *, check: bool = False,
            output_cap: int | None = None) -> Result:
        t0 = time.monotonic()
        if self.cluster.state != "up":
            return Result(node=self.name, command=command, exit_status=-1, stdout="",
                          stderr="channel closed", seconds=0.0)
        self.commands.append(command)
        rc, out, err = self.cluster.world.answer(self, command)
        if self.cluster.state != "up":  # torn down while the command ran
            rc, err = -1, "channel closed"
        return Result(node=self.name, command=command, exit_status=rc, stdout=out,
                      stderr=err, seconds=time.monotonic() - t0, timed_out=rc is None)

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        self.files[path] = data.decode() if isinstance(data, bytes) else data


class FakeCluster:
    made: list[FakeCluster]

    def __init__(self, topology: Topology, world: World) -> None:
        self.world = world
        self.id = f"fake{len(world.clusters) + 1}"
        self.state = "new"
        self.nodes = [FakeNode(self, n.name, n.role) for n in topology.nodes]
        self.down_at: float | None = None
        world.clusters.append(self)

    def up(self) -> FakeCluster:
        self.state = "up"
        self.world.on_up(self)
        return self

    def down(self) -> None:
        if self.state != "down":
            self.down_at = time.monotonic()
        self.state = "down"

    def __getitem__(self, name: str) -> FakeNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def run_all(self, command: str, timeout: float = 600.0) -> dict[str, Result]:
        return {node.name: node.run(command, timeout=timeout) for node in self.nodes}

    def reboot(self) -> dict[str, float]:
        self.reboots = getattr(self, "reboots", 0) + 1
        self.world.on_reboot(self)
        return {node.name: 0.01 for node in self.nodes}


class World:
    """Answers commands; subclass ``script`` (a role's script ran) and ``command``."""

    install_s = 1.5

    def __init__(self) -> None:
        self.clusters: list[FakeCluster] = []
        self.lock = threading.Lock()

    def factory(self) -> Callable[[Topology], FakeCluster]:
        return lambda topology: FakeCluster(topology, self)

    def on_up(self, cluster: FakeCluster) -> None:
        cluster.facts = {}  # type: ignore[attr-defined]

    def on_reboot(self, cluster: FakeCluster) -> None:
        """What a reboot loses: override to drop runtime-only state."""

    def answer(self, node: FakeNode, command: str) -> Answer:
        match = _SCRIPT.search(command)
        if match:
            role = match.group(1)
            rc, out, err = self.script(node, role, node.files[f"/root/antrieb/{role}.sh"])
            return rc, out, err + f"\n@@antrieb-install-seconds {self.install_s:.3f}\n"
        if "/usr/local/sbin/apt-get" in command:
            return 0, "", ""
        return self.command(node, command)

    def script(self, node: FakeNode, role: str, text: str) -> Answer:
        return 0, "ok", ""

    def command(self, node: FakeNode, command: str) -> Answer:
        return 0, "", ""


class LoadBalancerWorld(World):
    """Enough of nginx and HAProxy for the two curated load-balancer examples."""

    def script(self, node: FakeNode, role: str, text: str) -> Answer:
        facts = node.cluster.facts  # type: ignore[attr-defined]
        if role == "lb" and "server web2:80\n" in text:
            return 1, "Setting up nginx ...", (
                'nginx: [emerg] unexpected "}" in /etc/nginx/conf.d/lb.conf:4\n'
                "nginx: configuration file /etc/nginx/nginx.conf test failed")
        if role == "web":
            facts[node.name] = "127.0.0.1:8080" if "listen 127.0.0.1:8080" in text else "*"
        if role == "lb":
            facts["lb"] = "haproxy" if "haproxy" in text else "nginx"
        return 0, "Setting up ...\n", ""

    def command(self, node: FakeNode, command: str) -> Answer:
        facts = node.cluster.facts  # type: ignore[attr-defined]
        if "curl" in command and "http://lb/" in command:
            if all(facts.get(w) == "*" for w in ("web1", "web2")):
                return 0, "hello from web1\nhello from web2\n" * 2, ""
            return 0, ("<html><body><h1>503 Service Unavailable</h1>\nNo server is available "
                       "to handle this request.\n</body></html>\n") * 4, ""
        if "curl" in command and "web1:8080" in command:
            return 7, "", ("*   Trying 10.0.0.3:8080...\n* connect to 10.0.0.3 port 8080 "
                           "failed: Connection refused\ncurl: (7) Failed to connect")
        if command.startswith("ss -ltnp"):
            bind = facts.get(node.name, "*")
            return 0, ("State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n"
                       "LISTEN 0      128          0.0.0.0:22        0.0.0.0:*\n"
                       f"LISTEN 0      511   {bind}:8080 0.0.0.0:* users:((\"nginx\"))\n"), ""
        return 0, "", ""


def host_assertions_pass(host, assertion):
    """Stand-in for testinfra on fake nodes (the real one is tested on a local node)."""
    return True, f"{assertion.kind} ok"
