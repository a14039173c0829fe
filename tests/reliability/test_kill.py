"""``kill -9`` of the process that owns a run, mid-run, 20 times: nothing survives it, the
run record stays readable, and the next run starts clean and converges.

Counted before and after every kill: the run's supervisor and QEMU processes, its
network and mount namespaces (the bridge and taps live in the one, the tmpfs of
overlays and consoles in the other), the host's runtime mountpoint (must stay empty),
``/dev/shm``, and the processes mapping a golden snapshot's RAM file (clones map it
privately; after the kill only other users' clones may).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from antrieb import config
from antrieb.bench_soak import alive, namespace_holders

from .harness import (
    ModelServer,
    cluster_processes,
    cmdline,
    is_cluster_process,
    is_supervisor,
    run_state,
)
from .test_stop import PHASES, SEED, _child_env, _Lines

KILLS = int(os.environ.get("ANTRIEB_KILL_ROUNDS", "20"))


def golden_mappers() -> set[int]:
    """Processes that map some golden snapshot's RAM file."""
    golden = str(config.cache_dir() / "golden")
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/maps") as f:
                    if any(golden in line and line.rstrip().endswith("/mem") for line in f):
                        found.add(int(entry))
            except OSError:
                continue
    return found


def _child(model: ModelServer, rounds: int) -> tuple[subprocess.Popen, _Lines]:
    """A child that imports now and starts its run on "go" (see :func:`_go`): the next
    round's child starts while this round runs, so imports cost no round time."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.stop_child", str(rounds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**_child_env(model), "ANTRIEB_CHILD_WAIT": "1"},
                            cwd=config.REPO_ROOT)
    return proc, _Lines(proc.stdout)


def _go(proc: subprocess.Popen, lines: _Lines) -> None:
    assert lines.until(lambda s: '"ready"' in s), "the child did not start"
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_kill_9_of_the_owner_mid_run_leaves_nothing(debian12):
    rng = random.Random(SEED + 3)
    runtime = config.cache_dir() / "runtime"
    shm_before = set(os.listdir("/dev/shm"))
    rows = []
    with ModelServer(delay=0.8) as model:
        ahead = _child(model, 1)
        try:
            for i in range(KILLS):
                phase, opener, window = PHASES[i % len(PHASES)]
                (proc, lines), ahead = ahead, _child(model, 1)
                try:
                    _go(proc, lines)
                    start = json.loads(lines.until(lambda s: '"converger"' in s) or "{}")
                    assert start, "the child did not start a run"
                    assert lines.until(lambda s, o=opener: f'"kind": "{o}"' in s), opener
                    time.sleep(rng.uniform(0, window))
                    pids = set(cluster_processes(proc.pid))
                    sups = [p for p in pids if is_supervisor(cmdline(p))]
                    spaces = set()
                    for sup in sups:
                        for kind in ("net", "mnt"):
                            with contextlib.suppress(OSError):
                                spaces.add(os.readlink(f"/proc/{sup}/ns/{kind}"))
                    mapping = golden_mappers() & pids
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    procs_gone = _wait(lambda p=pids: not any(alive(x) for x in p))
                    spaces_gone = _wait(lambda s=spaces, p=pids: not left_in(s, p))
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    proc.stdin.close()
                    proc.stdout.close()
                rows.append({
                    "round": i, "phase": phase, "processes": len(pids), "namespaces": len(spaces),
                    "golden_mappers": len(mapping),
                    "left_processes": sum(1 for p in pids if alive(p)),
                    "left_namespaces": left_in(spaces, pids),
                    "left_golden_mappers": len(golden_mappers() & pids),
                    "runtime_entries": len(os.listdir(runtime)),
                    "new_shm": orphaned_shm(set(os.listdir("/dev/shm")) - shm_before),
                    "record": run_state(start["record"]),  # readable: not torn by the kill
                    "ok": procs_gone and spaces_gone,
                })
            # the next run starts clean and goes all the way
            proc, lines = ahead
            _go(proc, lines)
            done = lines.until(lambda s: '"done"' in s or '"escaped"' in s, timeout=300)
            proc.wait(60)
            proc.stdin.close()
            proc.stdout.close()
        finally:  # the child started ahead for a round that never came
            if ahead[0].poll() is None:
                ahead[0].kill()
                ahead[0].wait()
    (config.REPO_ROOT / "test-reports").mkdir(exist_ok=True)
    (config.REPO_ROOT / "test-reports" / "kill-9.json").write_text(json.dumps(rows, indent=1))
    killed_live = sum(1 for r in rows if r["processes"])
    print(f"kill -9: {len(rows)} kills ({killed_live} with a live cluster, "
          f"{sum(r['processes'] for r in rows)} processes, "
          f"{sum(r['namespaces'] for r in rows)} namespaces, "
          f"{sum(r['golden_mappers'] for r in rows)} golden RAM mappings before the kills); "
          f"left after: {sum(r['left_processes'] for r in rows)} processes, "
          f"{sum(r['left_namespaces'] for r in rows)} namespaces, "
          f"{sum(r['left_golden_mappers'] for r in rows)} mappings")
    bad = [r for r in rows if not r["ok"] or r["left_processes"] or r["left_namespaces"]
           or r["left_golden_mappers"] or r["runtime_entries"] or r["new_shm"]]
    assert not bad, bad
    assert killed_live >= KILLS // 3, "too few kills hit a live cluster to prove anything"
    assert done and json.loads(done).get("status") == "converged", done


def orphaned_shm(names: set[str]) -> list[str]:
    """Of these /dev/shm entries, those no live process maps (others' databases map theirs;
    a leak of ours would be mapped by nobody once our processes are dead)."""
    if not names:
        return []
    mapped = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/maps") as f:
                mapped.update(n for line in f for n in names if f"/dev/shm/{n}" in line)
    return sorted(names - mapped)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def left_in(spaces: set[str], pids: set[int]) -> int:
    """How many of a killed run's namespaces something of that run still holds: one of
    its processes, or an orphaned supervisor/QEMU (re-parented to init). The kernel
    reuses namespace numbers, so another user's new cluster may show up under one."""
    holders = namespace_holders("net")
    for ns, procs in namespace_holders("mnt").items():
        holders.setdefault(ns, set()).update(procs)
    return sum(1 for ns in spaces if any(
        p in pids or (is_cluster_process(p) and _ppid(p) == 1) for p in holders.get(ns, ())))
