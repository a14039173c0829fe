"""Apply artifacts to a live cluster: shell scripts per role, or one Ansible playbook.

Package installs are timed inside the guest by a shim: ``apt-get`` and ``apt`` in
``/usr/local/sbin`` (first in root's PATH, also for Ansible's apt module) run the real
program and append start and end times to a log; each step reports the seconds its
installs took (``install_s``) at the end of its stderr, where it is cut off again.

Example::

    prepare_nodes(cluster.nodes)
    steps = apply_artifacts(cluster, topology, artifacts, on_step=print)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from antrieb import events
from antrieb.converge.checks import RunsCommands
from antrieb.converge.models import AnsibleArtifacts, ShellArtifacts, Topology
from antrieb.converge.results import StepResult

WORKDIR = "/root/antrieb"
INSTALL_LOG = "/var/log/antrieb-install.log"
APT_LOG = "/var/log/antrieb-apt.log"  # "rc program args" of every apt command, kept
# Guest tuning (``tuned``): apt fetches the gzip lists instead of xz. Same index, same
# packages; xz costs seconds more to unpack under emulation (antrieb bench apt-phases).
APT_SPEED_CONF = "/etc/apt/apt.conf.d/00antrieb-speed"
APT_SPEED = 'Acquire::CompressionTypes::Order:: "gz";\n'
_MARK = "@@antrieb-install-seconds"
_MARK_RE = re.compile(rf"\n?{_MARK} ([0-9.]+)\n?$")
_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                    re.M)


def _shim(program: str) -> str:
    return (
        "#!/bin/sh\n"
        "# antrieb: times package installs for the run's figures; then the real program\n"
        "s=$(date +%s.%N)\n"
        f'/usr/bin/{program} "$@"\n'
        "rc=$?\n"
        f'echo "$s $(date +%s.%N) {program} $*" >> {INSTALL_LOG}\n'
        f'echo "$rc {program} $*" >> {APT_LOG}\n'
        "exit $rc\n")


def prepare_command(tuned: bool = False) -> str:
    """One command that installs the shims and the work folder on a node (and with
    ``tuned``, the guest's apt speed settings)."""
    parts = [f"mkdir -p {WORKDIR}", f": > {INSTALL_LOG}", f": > {APT_LOG}"]
    if tuned:
        parts.append(f"printf %s {shlex.quote(APT_SPEED)} > {APT_SPEED_CONF}")
    for program in ("apt-get", "apt"):
        path = f"/usr/local/sbin/{program}"
        parts.append(f"printf %s {shlex.quote(_shim(program))} > {path} && chmod 755 {path}")
    return " && ".join(parts)


def _timed(command: str) -> str:
    """``command``, then the seconds spent in apt since the log was emptied, on stderr."""
    total = f"awk '{{s+=$2-$1}} END {{printf \"%.3f\", s+0}}' {INSTALL_LOG} 2>/dev/null"
    return (f": > {INSTALL_LOG}; export PATH=/usr/local/sbin:$PATH; ( {command}\n)\nrc=$?\n"
            f"printf '\\n{_MARK} %s\\n' \"$({total})\" >&2\nexit $rc")


def split_install_seconds(stderr: str) -> tuple[str, float]:
    """(stderr without our marker, install seconds) of a timed command."""
    match = _MARK_RE.search(stderr)
    if not match:
        return stderr, 0.0
    return stderr[:match.start()], float(match.group(1))


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Ansible's PLAY RECAP: host -> {ok, changed, unreachable, failed}."""
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)),
                         "unreachable": int(m.group(4)), "failed": int(m.group(5))}
            for m in _RECAP.finditer(output)}


def _run_step(node: RunsCommands, role: str, artifact: str, command: str,
              timeout: float) -> StepResult:
    try:
        r = node.run(_timed(command), timeout=timeout)
    except Exception as exc:  # a torn-down cluster (stop) or a lost connection
        return StepResult(node=node.name, role=role, artifact=artifact, exit_status=None,
                          stderr=f"{type(exc).__name__}: {exc}")
    stderr, install_s = split_install_seconds(r.stderr)
    return StepResult(node=node.name, role=role, artifact=artifact, exit_status=r.exit_status,
                      stdout=r.stdout, stderr=stderr, seconds=r.seconds,
                      timed_out=r.timed_out, install_s=install_s)


def prepare_nodes(nodes: Sequence[RunsCommands], timeout: float = 120.0,
                  tuned: bool = False) -> None:
    """Shims and work folder on every node, in parallel (this also opens SSH)."""
    # no `with`: on Ctrl-C it would wait for every worker (an SSH handshake takes
    # seconds under TCG) before the caller could tear the cluster down
    pool = ThreadPoolExecutor(max(1, len(nodes)))
    try:
        list(pool.map(events.carry(lambda n: n.run(prepare_command(tuned), timeout=timeout)),
                      nodes))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def apply_shell(node_of: Callable[[str], Any], topology: Topology, artifacts: ShellArtifacts, *,
                timeout: float = 900.0, on_step: Callable[[StepResult], None] = lambda s: None,
                stopped: Callable[[], bool] = lambda: False) -> list[StepResult]:
    """Run each role's script on the role's nodes, stage by stage; stop at a failed stage."""
    steps: list[StepResult] = []
    command = f"cd /root && DEBIAN_FRONTEND=noninteractive bash {WORKDIR}/{{role}}.sh"

    def one(job: tuple[Any, str]) -> StepResult:
        node, role = job
        step = _run_step(node, role, f"script:{role}", command.format(role=role), timeout)
        on_step(step)
        return step

    for stage in artifacts.ordered_stages():
        if stopped():
            break
        jobs = [(node_of(n.name), role) for role in stage for n in topology.nodes_of(role)]
        for node, role in jobs:
            node.put(f"{WORKDIR}/{role}.sh", artifacts.scripts[role], 0o755)
        # no `with`: on Ctrl-C the caller must get control now (and tear the cluster
        # down, which ends the remote commands), not after every worker has finished
        pool = ThreadPoolExecutor(max(1, len(jobs)))
        try:
            stage_steps = list(pool.map(events.carry(one), jobs))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        steps += stage_steps
        if not all(s.ok for s in stage_steps):
            break
    return steps


def inventory_for(topology: Topology) -> str:
    """An INI inventory: one group per role, every node by its name, root over SSH."""
    lines = []
    for role in topology.roles:
        lines.append(f"[{role}]")
        lines += [n.name for n in topology.nodes_of(role)]
        lines.append("")
    lines += ["[all:vars]", "ansible_user=root", "ansible_python_interpreter=/usr/bin/python3",
              "ansible_ssh_common_args='-o StrictHostKeyChecking=no'", ""]
    return "\n".join(lines)


def apply_ansible(node_of: Callable[[str], Any], topology: Topology,
                  artifacts: AnsibleArtifacts, *, timeout: float = 1200.0,
                  on_step: Callable[[StepResult], None] = lambda s: None) -> list[StepResult]:
    """``ansible-playbook`` on the control node; ``changed`` is the recap's sum."""
    control = node_of(artifacts.control)
    control.put(f"{WORKDIR}/playbook.yml", artifacts.playbook)
    control.put(f"{WORKDIR}/inventory.ini", artifacts.inventory or inventory_for(topology))
    command = (f"cd {WORKDIR} && ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_NOCOLOR=1 "
               "ANSIBLE_RETRY_FILES_ENABLED=0 ansible-playbook -i inventory.ini playbook.yml")
    role = next(n.role for n in topology.nodes if n.name == artifacts.control)
    step = _run_step(control, role, "playbook", command, timeout)
    recap = parse_recap(step.stdout)
    if recap:
        step.changed = sum(h["changed"] for h in recap.values())
    # installs ran on the managed nodes, in parallel: the longest is on the critical path
    others = [node_of(n.name) for n in topology.nodes if n.name != artifacts.control]
    seconds = [step.install_s]
    for node in others:
        try:
            r = node.run(f"awk '{{s+=$2-$1}} END {{printf \"%.3f\", s+0}}' {INSTALL_LOG}; "
                         f": > {INSTALL_LOG}", timeout=30)
            seconds.append(float(r.stdout.strip() or 0))
        except (ValueError, Exception):
            continue
    step.install_s = max(seconds)
    on_step(step)
    return [step]


def apply_artifacts(node_of: Callable[[str], Any], topology: Topology,
                    artifacts: ShellArtifacts | AnsibleArtifacts, *,
                    on_step: Callable[[StepResult], None] = lambda s: None,
                    stopped: Callable[[], bool] = lambda: False,
                    timeout: float | None = None) -> list[StepResult]:
    """Apply either kind of artifacts; every step reported through ``on_step``;
    ``timeout`` bounds each step (a script or the playbook run)."""
    limit = {"timeout": timeout} if timeout else {}
    if isinstance(artifacts, ShellArtifacts):
        return apply_shell(node_of, topology, artifacts, on_step=on_step, stopped=stopped,
                           **limit)
    return apply_ansible(node_of, topology, artifacts, on_step=on_step, **limit)


def critical_install_s(steps: Sequence[StepResult], topology: Topology,
                       artifacts: ShellArtifacts | AnsibleArtifacts) -> float:
    """Install seconds on the critical path: per stage the longest node, summed."""
    if isinstance(artifacts, AnsibleArtifacts):
        return sum(s.install_s for s in steps)
    total = 0.0
    for stage in artifacts.ordered_stages():
        in_stage = [s.install_s for s in steps if s.role in stage]
        total += max(in_stage, default=0.0)
    return total


def critical_seconds(steps: Sequence[StepResult],
                     artifacts: ShellArtifacts | AnsibleArtifacts) -> float:
    """Seconds of the steps on the critical path (stages in sequence, nodes in parallel)."""
    if isinstance(artifacts, AnsibleArtifacts):
        return sum(s.seconds for s in steps)
    return sum(max((s.seconds for s in steps if s.role in stage), default=0.0)
               for stage in artifacts.ordered_stages())
