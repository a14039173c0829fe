"""Experiments on Dask across "hosts": the scheduler, the PostgreSQL store and the client
in one network namespace, each worker in a namespace of its own joined to it by a veth
pair, with its own cache. Workers reach the scheduler and the store only by address
(TCP, no Unix socket, no shared cache), as hypervisor hosts would.

Needs root (network namespaces, veth pairs); everything lives in namespaces this test
makes, which the kernel removes when their last process, ended here by PID, is gone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from antrieb import store
from tests.integration.conftest import postgres_server
from tests.integration.test_dask_experiment import GRID, NOTEBOOK

pytestmark = [pytest.mark.db,  # starts a PostgreSQL of its own
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

BIN = Path(sys.executable).parent
HEAD = "10.218.0.1"  # the head's end of every worker's link: 10.218.N.1 <-> 10.218.N.2


class Netns:
    """An anonymous network namespace, held by a ``sleep`` (ended by PID)."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == \
                os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare --net did not take"
            time.sleep(0.05)
        self.ip("link set lo up")

    @property
    def enter(self) -> tuple[str, ...]:
        return ("nsenter", f"--net=/proc/{self.holder.pid}/ns/net")

    def ip(self, *commands: str) -> None:
        subprocess.run([*self.enter, "ip", "-batch", "-"], input="\n".join(commands) + "\n",
                       text=True, check=True, capture_output=True)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def link(head: Netns, host: Netns, n: int) -> str:
    """A veth pair from ``head`` to ``host`` (10.218.n.1 <-> 10.218.n.2); the host's
    only route out is through it. Returns the host's address."""
    subprocess.run(["ip", "link", "add", f"to-w{n}", "netns", str(head.holder.pid), "type",
                    "veth", "peer", "name", "eth0", "netns", str(host.holder.pid)],
                   check=True, capture_output=True)
    head.ip(f"addr add 10.218.{n}.1/24 dev to-w{n}", f"link set to-w{n} up")
    host.ip(f"addr add 10.218.{n}.2/24 dev eth0", "link set eth0 up",
            f"route add default via 10.218.{n}.1")
    return f"10.218.{n}.2"


def _end(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def hosts(tmp: Path, workers: int = 2) -> Iterator[tuple[Netns, list[Netns], list[str]]]:
    head = Netns()
    spaces = []
    try:
        head.ip(f"addr add {HEAD}/32 dev lo")
        spaces = [Netns() for _ in range(workers)]
        addresses = [link(head, ns, n + 1) for n, ns in enumerate(spaces)]
        yield head, spaces, addresses
    finally:
        for ns in [*spaces, head]:
            ns.close()


@pytest.mark.timeout(900)
def test_workers_in_their_own_network_namespaces_reach_scheduler_and_store_by_address(
        tmp_path) -> None:
    procs: list[subprocess.Popen] = []
    with hosts(tmp_path) as (head, spaces, addresses), postgres_server(
            listen=HEAD, hba="host all all 10.218.0.0/16 trust", prefix=head.enter) as pg:
        try:
            pg_url = pg.createdb("antrieb_hosts")  # for this process: the Unix socket
            tcp_url = f"postgresql://antrieb@{HEAD}:5432/antrieb_hosts"
            sched_file = tmp_path / "scheduler.json"
            procs.append(subprocess.Popen(
                [*head.enter, str(BIN / "dask"), "scheduler", "--host", HEAD, "--port", "0",
                 "--no-dashboard", "--scheduler-file", str(sched_file)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 60
            while not sched_file.exists():
                assert time.monotonic() < deadline, "dask scheduler did not start"
                time.sleep(0.2)
            address = json.loads(sched_file.read_text())["address"]
            base = {k: v for k, v in os.environ.items() if k != "ANTRIEB_STORE"}
            for n, (ns, ip) in enumerate(zip(spaces, addresses, strict=True)):
                env = {**base, "ANTRIEB_CACHE": str(tmp_path / f"host{n + 1}"),
                       "ANTRIEB_STORE": tcp_url}
                procs.append(subprocess.Popen(
                    [*ns.enter, str(BIN / "dask"), "worker", address, "--host", ip,
                     "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--no-nanny",
                     "--preload", "antrieb.notebook.distributed"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            grid = tmp_path / "grid.yaml"
            grid.write_text(json.dumps(GRID))
            client_env = {**base, "ANTRIEB_CACHE": str(tmp_path / "client")}
            done = subprocess.run(
                [*head.enter, str(BIN / "python"), "-c", _WAIT_FOR_WORKERS, address, "2"],
                env=client_env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            cli = subprocess.run(
                [*head.enter, str(BIN / "antrieb"), "experiment", "run", str(NOTEBOOK),
                 "-p", "mode", "recorded", "--grid", str(grid), "--dask", address, "--json"],
                env=client_env, capture_output=True, text=True, timeout=600)
            assert cli.returncode == 1, cli.stderr[-3000:]  # the last entry fails on purpose
            rows = json.loads(cli.stdout)
        finally:
            for proc in reversed(procs):
                _end(proc)
        assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
        hosts_of = {r["worker"].rpartition(":")[0] for r in rows}
        assert hosts_of == {f"tcp://{ip}" for ip in addresses}  # both "hosts" ran cells
        # each host wrote its own cells into the store, by address
        db = store.connect(pg_url)
        try:
            points = db.dicts("SELECT idx, status, worker, path FROM experiment_points p "
                              "JOIN experiments e USING (experiment_id) ORDER BY idx")
            assert [(p["idx"], p["status"], p["worker"]) for p in points] == \
                [(r["index"], r["status"], r["worker"]) for r in rows]
            assert {p["path"] for p in points} == {None}  # not the client: it has SQLite
            runs = db.dicts("SELECT er.idx, r.status FROM experiment_runs er "
                            "JOIN runs r USING (run_id) ORDER BY er.idx")
            assert [(x["idx"], x["status"]) for x in runs] == \
                [(0, "converged"), (1, "converged"), (2, "converged")]
        finally:
            db.close()
    # the executed notebooks came back to the client; each host kept its own copies
    for r in rows:
        assert r["output"].startswith(str(tmp_path / "client"))
        assert json.loads(Path(r["output"]).read_text())["cells"]
    for n in (1, 2):
        mine = [r for r in rows if r["worker"].startswith(f"tcp://{addresses[n - 1]}:")]
        kept = sorted(p.name for p in (tmp_path / f"host{n}" / "experiments").glob(
            "*/notebooks/*.ipynb"))
        assert kept == sorted(Path(r["output"]).name for r in mine)


_WAIT_FOR_WORKERS = """
import sys
from distributed import Client
with Client(sys.argv[1], timeout=60) as c:
    c.wait_for_workers(int(sys.argv[2]), timeout=60)
"""
