"""Integration tier: real servers started by the test run, no VMs.

- ``postgres``: a PostgreSQL from Debian's package, its own cluster in a temp folder
  (initdb as an unprivileged user: tests run as root and postgres refuses root),
  listening on a Unix socket only, stopped by its PID at the end of the session
  (:func:`postgres_server` starts another, e.g. on TCP in a network namespace).
- ``mcp_session``: the official MCP client over stdio against ``antrieb mcp`` spawned
  as a separate process.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from antrieb.examples import load_example, names

EXAMPLE_RUNS = [r for n in names() if (r := load_example(n).reference_run()) is not None]
EXPERIMENT = Path(__file__).parent.parent / "unit" / "store" / "data" / "experiment.json"


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian package 'postgresql'; ./dev setup "
                    "installs it)")
    return Path(found[-1]).parent


class Postgres:
    def __init__(self, root: Path, proc: subprocess.Popen, db: str, user: str) -> None:
        self.root, self.proc, self.db, self.user = root, proc, db, user

    def url(self, db: str | None = None) -> str:
        return f"postgresql://{self.user}@/{db or self.db}?host={self.root}"

    def createdb(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_user(account: str | None) -> list[str]:
    if account is None:
        return []
    pw = pwd.getpwnam(account)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


@contextlib.contextmanager
def postgres_server(listen: str = "", hba: str = "", prefix: tuple[str, ...] = ()):
    """A PostgreSQL of its own in a temp folder, on a Unix socket there and on the TCP
    addresses ``listen`` (none by default), with ``hba`` lines appended to pg_hba.conf;
    ``prefix`` runs the server through e.g. ``nsenter`` (another network namespace).
    Stopped by its PID on exit."""
    bindir = pg_bin()
    account = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        account = "postgres" if _has_user("postgres") else "nobody"
    root = Path(tempfile.mkdtemp(prefix="antrieb-pg-"))
    if account:
        pw = pwd.getpwnam(account)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    subprocess.run([*_as_user(account), str(bindir / "initdb"), "-D", str(data), "-A",
                    "trust", "-U", "antrieb", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, cwd=root)
    if hba:
        with open(data / "pg_hba.conf", "a") as f:
            f.write(hba + "\n")
    log = open(root / "postgres.log", "wb")  # noqa: SIM115 (open for the server's life)
    # fsync off: a test database that dies with the test run needs no durability
    proc = subprocess.Popen(
        [*prefix, *_as_user(account), str(bindir / "postgres"), "-D", str(data), "-k",
         str(root), "-c", f"listen_addresses={listen}", "-c", "fsync=off", "-c",
         "synchronous_commit=off", "-c", "full_page_writes=off"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(bindir / "pg_isready"), "-h", str(root), "-q"],
                             check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("PostgreSQL did not start:\n" +
                            (root / "postgres.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield Postgres(root, proc, "postgres", "antrieb")
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown, by the PID we started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    with postgres_server() as server:
        yield server


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ANTRIEB_STORE", raising=False)
    return tmp_path / "cache"


@contextlib.asynccontextmanager
async def mcp_client(env: dict[str, str]):
    """The official MCP client, over stdio, against `antrieb mcp` as its own process."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    exe = Path(sys.executable).parent / "antrieb"
    params = StdioServerParameters(command=str(exe), args=["mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@pytest.fixture
def anyio_backend():
    return "asyncio"
