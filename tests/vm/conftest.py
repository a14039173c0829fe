"""Fixtures for the real-VM tier: images built once per run, clusters always torn down,
and each VM's serial console kept next to the test report when a test fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import types
from pathlib import Path

import pytest

from antrieb import Cluster, config
from antrieb.bench_soak import namespace_holders

REPORTS = config.REPO_ROOT / "test-reports"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            # The first test to need an image builds it (and its golden snapshot): on a
            # fresh, busy machine that can take minutes.
            if not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(900))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def debian12():
    """debian-12 built (or taken from the cache) and its golden snapshot made, once."""
    from antrieb.vm.driver import get_driver

    driver = get_driver("qemu")
    driver.prepare({"debian-12"})
    return driver


# The cluster tests that prove the drivers' shared guarantees run once per driver variant
# (parametrize indirectly over ``driver_variant``); the others run on the qemu driver.
LIBVIRT_VARIANTS = ["libvirt-embed", "libvirt-system"]
ALL_DRIVERS = ["qemu", *LIBVIRT_VARIANTS]


@pytest.fixture(scope="session")
def libvirtd_uri():
    """A real libvirtd (and the virtlogd it needs) from Debian's packages, with its own
    config, socket and pid files; stopped again by PID after the session."""
    daemons = {name: shutil.which(name) or f"/usr/sbin/{name}" for name in ("libvirtd",
                                                                           "virtlogd")}
    missing = [name for name, path in daemons.items() if not os.path.exists(path)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: ./dev setup installs libvirt-daemon")
    folder = Path(tempfile.mkdtemp(prefix="antrieb-libvirtd-", dir="/tmp"))  # short socket paths
    procs: list[subprocess.Popen] = []
    try:
        for name in ("virtlogd", "libvirtd"):
            conf = folder / f"{name}.conf"
            lines = [f'log_outputs = "3:file:{folder}/{name}.log"']
            if name == "libvirtd":
                lines.append(f'unix_sock_dir = "{folder}"')
            conf.write_text("\n".join(lines) + "\n")
            with open(folder / f"{name}.out", "wb") as out:
                procs.append(subprocess.Popen(
                    [daemons[name], "-f", str(conf), "-p", str(folder / f"{name}.pid")],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        sock = folder / "libvirt-sock"
        deadline = time.monotonic() + 60
        while not sock.exists():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                log = (folder / "libvirtd.out").read_text(errors="replace")[-2000:]
                pytest.fail(f"libvirtd did not start: {log}")
            time.sleep(0.1)
        yield f"qemu:///system?socket={sock}"
    finally:
        for proc in reversed(procs):  # by PID: only the daemons this session started
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def driver_variant(request) -> str:
    return getattr(request, "param", "qemu")


@pytest.fixture
def driver_env(request, driver_variant) -> dict[str, str]:
    """The environment that makes ``Cluster(...)`` use this variant (also in a child)."""
    if driver_variant == "qemu":
        return {"ANTRIEB_DRIVER": "qemu"}
    request.getfixturevalue("debian12_libvirt")
    env = {"ANTRIEB_DRIVER": "libvirt"}
    if driver_variant == "libvirt-system":
        env["ANTRIEB_LIBVIRT_URI"] = request.getfixturevalue("libvirtd_uri")
    return env


@pytest.fixture(scope="session")
def debian12_libvirt():
    """The libvirt driver's golden domain of debian-12, saved once."""
    from antrieb.vm.driver import get_driver

    driver = get_driver("libvirt")
    driver.prepare({"debian-12"})
    return driver


@pytest.fixture
def cluster_factory(request, debian12, driver_env, monkeypatch):
    """Make clusters; all are torn down after the test, consoles saved if it failed."""
    made: list[Cluster] = []
    for key, value in driver_env.items():
        monkeypatch.setenv(key, value)

    def make(*args, **kwargs) -> Cluster:
        cluster = Cluster(*args, **kwargs)
        made.append(cluster)
        try:
            cluster.up()
        except Exception:
            _save_consoles(request.node, cluster, cluster.driver)
            raise
        return cluster

    yield make
    failed = any(getattr(request.node, f"rep_{w}", None) is not None
                 and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
    for cluster in made:
        if failed:
            _save_consoles(request.node, cluster, cluster.driver)
        cluster.down()


def _save_consoles(node, cluster: Cluster, driver) -> None:
    folder = REPORTS / "consoles" / re.sub(r"[^\w.-]+", "_", node.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    for plan in cluster.plans:
        try:
            text = driver.console(plan.name)
        except Exception as exc:  # the report must not hide the real failure
            text = f"(console unavailable: {exc})"
        (folder / f"{cluster.id}-{plan.name}.log").write_text(text)


def qemu_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"qemu-system-x86_64") and b"-name" in cmd:
                name = cmd[cmd.index(b"-name") + 1].removeprefix(b"guest=")  # libvirt's
                if name.startswith(b"antrieb-"):
                    pids.add(int(entry.name))
    return pids


def net_namespaces() -> set[str]:
    return set(namespace_holders("net"))


def mount_namespaces() -> set[str]:
    return set(namespace_holders("mnt"))


def libvirt_domains(uri: str) -> list[str]:
    """Names of every domain a (non-embedded) libvirt shows, through a fresh connection."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


@pytest.fixture(scope="session")
def nginx_lb_over_mcp(debian12, tmp_path_factory):
    """nginx-lb's one live convergence in this tier (several minutes under TCG), run the
    way an AI client runs it: `antrieb mcp` as its own process, driven by the official MCP
    client. The MCP tests read the answer; the convergence tests read the same run's
    record (run.json and events.jsonl, as written while it ran)."""
    import anyio

    from antrieb.converge.record import load_events, load_run
    from antrieb.converge.results import RunResult
    from tests.integration.conftest import mcp_client

    env = {k: v for k, v in os.environ.items() if k.startswith("ANTRIEB_")}
    env["ANTRIEB_STORE"] = str(tmp_path_factory.mktemp("mcp-store") / "store.sqlite")
    messages: list[str] = []

    async def converge():
        async def progress(done: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")

        async with mcp_client(env) as session:
            answer = await session.call_tool("run_example", {"name": "nginx-lb"},
                                             progress_callback=progress)
            listed = await session.call_tool("list_runs", {})
            return answer, listed

    t0 = time.monotonic()
    answer, listed = anyio.run(converge)
    seconds = time.monotonic() - t0
    assert not answer.is_error, [c.text for c in answer.content]
    out = answer.structured_content
    record = load_run(out["run_id"])
    return types.SimpleNamespace(
        answer=out, messages=messages, listed=listed.structured_content["result"],
        seconds=seconds, store=env["ANTRIEB_STORE"], record=record,
        result=RunResult.model_validate(record["result"]), events=load_events(out["run_id"]))
