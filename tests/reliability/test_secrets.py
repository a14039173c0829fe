"""Secrets stay secret.

A canary API key in the environment (``OPENAI_API_KEY``) really flows to the model
server through the openai client, and appears nowhere else: not in the command's
output, the run record (run.json, events.jsonl, llm.jsonl), the run store (the default
SQLite file; what the MCP server's ``get_run`` returns is the store's row), or the
notebook report; not even when the server echoes it in an error. SSH keys are made per
cluster, never written to the host, and gone with the cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from antrieb import config
from antrieb.converge.record import runs_dir

from .harness import ModelServer, purpose_of, tiny_model
from .test_stop import _child_env

# kernel file systems: nothing antrieb writes lands there, and reading some blocks
# (/proc/kmsg waits for the next kernel message)
_KERNEL_FS = {"proc", "sysfs", "devpts", "devtmpfs", "cgroup", "cgroup2", "debugfs",
              "tracefs", "securityfs", "bpf", "mqueue", "configfs", "pstore", "fusectl",
              "binfmt_misc", "autofs", "hugetlbfs"}


def _kernel_mounts() -> set[str]:
    with open("/proc/self/mounts") as f:
        rows = [line.split() for line in f]
    # mount points escape blanks as octal (\040)
    return {row[1].encode().decode("unicode_escape") for row in rows
            if len(row) > 2 and row[2] in _KERNEL_FS}


def files_containing(needle: bytes, *roots: Path, since: float,
                     skip: tuple[str, ...] = ()) -> list[str]:
    """Regular files under roots (each under 64 MiB) written since `since` that hold needle.

    The needle is a secret made during the test, so only a file written after it was
    made can hold it; reading only those keeps the scan to seconds on a host whose
    temp folder holds gigabytes of earlier runs. Kernel file systems mounted below a
    root (a build's chroot) are not entered.
    """
    found = []
    kernel = _kernel_mounts()
    for root in roots:
        for folder, dirs, files in os.walk(root, onerror=lambda e: None):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip
                       and os.path.join(folder, d) not in kernel]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
                        continue
                    if max(st.st_mtime, st.st_ctime) < since:
                        continue
                    with open(path, "rb") as f:
                        if needle in f.read():
                            found.append(path)
                except OSError:
                    continue
    return found


def test_a_canary_api_key_appears_nowhere_but_on_the_wire(debian12):
    canary = f"sk-canary-{secrets.token_hex(16)}"
    made = time.time() - 2  # file times are coarser than time.time() on some filesystems

    def echoing(body: dict) -> tuple[int, dict]:
        # the first run: the server rejects the key and quotes it (real services do)
        if purpose_of(body) == "design" and "echo" in json.dumps(body):
            return 401, {"error": {"message": f"Incorrect API key provided: {canary}",
                                   "type": "invalid_request_error"}}
        return tiny_model(body)

    outputs, run_ids = [], []
    with ModelServer(echoing, delay=0.0) as server:
        for request in ("echo the key please", "a file /srv/hello saying hi"):
            out, err = _cli_run_request(server, canary, request)
            outputs += [out, err]
            run_ids.append(json.loads(out)["run_id"])
        wire = [v for r in server.requests for k, v in r["headers"].items()
                if k.lower() == "authorization"]
    assert f"Bearer {canary}" in wire, "the key did not reach the server: nothing was proven"
    results = [json.loads(o) for o in outputs[::2]]
    assert results[0]["status"] == "failed" and "401" in results[0]["reason"], results[0]
    assert results[1]["status"] == "converged", results[1]["reason"]

    leaks = [i for i, text in enumerate(outputs) if canary in text]
    assert not leaks, f"the key is in the command's output {leaks}"
    needle = canary.encode()
    for run_id in run_ids:
        folder = runs_dir() / run_id
        assert {"run.json", "events.jsonl", "llm.jsonl"} <= {p.name for p in folder.iterdir()}
        assert not files_containing(needle, folder, since=made)
    store_file = config.cache_dir() / "store.sqlite"
    checked = ["run record"]
    if store_file.exists():
        assert not files_containing(needle, config.cache_dir(), since=made, skip=tuple(
            str(config.cache_dir() / d) for d in ("images", "golden", "apt-cache")))
        from antrieb import store

        for run_id in run_ids:  # the MCP server's get_run answers with exactly this
            assert canary not in json.dumps(store.get_run(run_id), default=str)
        checked += ["store", "get_run (MCP)"]
    try:
        from antrieb.notebook.reports import report
    except ImportError:
        pass
    else:
        for run_id in run_ids:
            assert canary not in report(runs_dir() / run_id)._repr_html_()
        checked.append("notebook report")
    print(f"canary key checked in: CLI output, {', '.join(checked)}")


def _cli_run_request(model: ModelServer, key: str, request: str) -> tuple[str, str]:
    # the key under every name a provider reads one from; the default store (SQLite in
    # the cache folder) is on, as for a user
    env = {**_child_env(model), "OPENAI_API_KEY": key, "ANTHROPIC_API_KEY": key,
           "COLUMNS": "200"}
    env.pop("ANTRIEB_STORE", None)
    cli = [str(Path(sys.executable).with_name("antrieb")), "run", request,
           "--nodes", "1", "--image", "debian-12", "--llm", "openai", "--json"]
    p = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600,
                       cwd=config.REPO_ROOT)
    return p.stdout, p.stderr


def test_ssh_keys_are_per_cluster_never_on_the_host_and_gone_with_it(cluster_factory):
    made = time.time() - 2  # before either cluster's key exists
    a = cluster_factory(nodes=1)
    b = cluster_factory(nodes=1)
    keys = {}
    for cluster in (a, b):
        private = cluster._key.private_openssh
        body = private.strip().splitlines()[2]  # a line of the key's own base64
        # on the node in /run (a tmpfs): gone with the VM's memory
        in_vm = cluster["node1"].run("cat /run/antrieb/id_ed25519", timeout=60).stdout
        assert body in in_vm, "the node does not hold the cluster's key"
        keys[cluster.id] = body.encode()
    assert len(set(keys.values())) == 2, "two clusters share a key"
    roots = [config.cache_dir(), Path(tempfile.gettempdir()), Path("/dev/shm"),
             config.REPO_ROOT / "test-reports"]
    skip = tuple(str(config.cache_dir() / d) for d in ("images", "golden", "apt-cache"))
    # the scan finds a file written now (so a clean result below means something)
    control = secrets.token_hex(16).encode()
    with tempfile.NamedTemporaryFile(dir=roots[1], prefix="antrieb-secrets-") as f:
        f.write(control)
        f.flush()
        assert files_containing(control, *roots, since=made, skip=skip) == [f.name]
    for needle in keys.values():
        leaks = files_containing(needle, *roots, since=made, skip=skip)
        assert not leaks, f"a cluster key on the host: {leaks}"
    a.down()
    b.down()
    runtime = config.cache_dir() / "runtime"
    assert not os.listdir(runtime)
    for cluster in (a, b):
        assert not any(n._session._transport for n in cluster.nodes)
    for needle in keys.values():
        assert not files_containing(needle, *roots, since=made, skip=skip)


