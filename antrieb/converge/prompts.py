"""The conversations antrieb has with the model, one builder per purpose.

Every conversation starts with the same two messages for a task: the purpose's system
prompt and the task itself. Both depend on the task alone, never on live output, so a
recorded run replays exactly (the replay provider compares them verbatim). What the
cluster said (logs, command output) comes in later messages.

Example::

    messages = design_messages(task)
    answer = ask(llm, messages, DesignAnswer, purpose="design")
"""

from __future__ import annotations

import json

from antrieb.converge.models import Task, Topology, known_images
from antrieb.converge.results import CheckResult, Diagnosis, StepResult, tail
from antrieb.llm import Message

_COMMON = """You are antrieb's infrastructure engineer. Your code runs as root on freshly
installed Debian servers of a throw-away cluster (at most {max_nodes} nodes), and must run
the same on the user's real servers. Like a fresh install, a node has empty apt package
lists: run 'apt-get update' before 'apt-get install -y'. Only Debian's archives are
reachable (through a package proxy): no other repository, no download from the internet.
Nodes reach each other by hostname; root can ssh from any node to any other without a
password (host keys are checked: every node has its own). The result is proven on a new
cluster: applied twice, then every node reboots and every check must pass again, so
make runtime settings persistent (sysctl.d, enabled services, saved firewall rules).
Leave nothing behind the result does not need (scratch files, keys in /tmp).
Images: {images}.
Shell artifacts: one bash script per role ("scripts": {{role: script}}), optionally
"stages": [[roles run first, in parallel], [roles run next], ...]. Scripts must be
non-interactive and idempotent: running them twice must succeed.
Ansible artifacts: {{"tool": "ansible", "control": NODE, "playbook": YAML,
"inventory": optional INI}}; the playbook runs with ansible-playbook on the control node;
without an inventory every role is a group of its nodes. A second run must report
changed=0.
Answer with exactly one JSON object, no prose around it."""

_DESIGN = """Design the environment for the task: the topology (nodes with name, role,
image), the artifacts and the checks that prove the task is done (commands with
expectations {{"exit_status", "stdout_regex"}}, run on a node; or host assertions
{{"kind": "service_running"|"port_listening"|"file_contains"|"package_installed", ...}}).
Schema: {{"topology": {{"nodes": [{{"name", "role", "image"}}]}}, "artifacts": {{...}},
"checks": [{{"name", "node", "command", "expect"}} or {{"name", "node", "host"}}],
"notes": str}}. Leave out what the task already fixes."""

_RETRY = """The artifacts you wrote failed on a fresh cluster. You get the failure class,
the evidence and the logs. Answer with the complete corrected artifacts:
{{"explanation": what was wrong, "artifacts": {{...}}}}. The next attempt runs them on a
new fresh cluster: nothing of the failed attempt survives."""

_TROUBLESHOOT = """The artifacts you wrote were applied but the cluster does not behave as
the checks require. The failed cluster is still running: investigate it like an engineer
logged in over SSH, one command at a time. Answer either
{{"action": "run", "node": NODE, "command": "...", "why": "..."}} to run one command as
root on a node (you get its exit status and output), or, once you know the cause,
{{"action": "fix", "explanation": "...", "artifacts": {{complete corrected artifacts}}}}.
The fix runs on a new fresh cluster: put every change into the artifacts, not only on the
live nodes. You have at most {turns} commands."""

_SYNTHESIZE = """The task converged. Distil everything that worked, including fixes found
while troubleshooting, into one clean set of artifacts (one script per role, or one
playbook): no debugging leftovers, idempotent (a second run must succeed and change
nothing). They will be proven on a new fresh cluster, run twice.
Answer: {{"artifacts": {{...}}, "notes": "what the final version does"}}."""


def _system(template: str, task: Task, **extra: object) -> Message:
    images = ", ".join(task.images or known_images())
    text = _COMMON.format(max_nodes=task.max_nodes, images=images) + "\n\n" + template.format(
        **extra)
    return Message(role="system", content=text)


def task_message(task: Task) -> Message:
    """The task as the model sees it; deterministic for a given task."""
    parts = [f"Task: {task.request.strip()}", f"Tool: {task.tool}"]
    if task.notes:
        parts.append(f"Notes: {task.notes.strip()}")
    if task.topology is not None:
        parts.append("Topology (fixed): " + task.topology.model_dump_json())
    if task.checks:
        checks = [c.model_dump(mode="json", exclude_defaults=True) for c in task.checks]
        parts.append("Checks (fixed; all must pass): " + json.dumps(checks))
    if task.artifacts is not None:
        parts.append("The user's own code (deploy it, fix what fails, report findings): "
                     + task.artifacts.model_dump_json())
    return Message(role="user", content="\n".join(parts))


def _artifacts_message(artifacts: object, topology: Topology | None,
                       checks: list | None) -> Message:
    body: dict = {"artifacts": artifacts.model_dump(mode="json")}  # type: ignore[attr-defined]
    if topology is not None:
        body["topology"] = topology.model_dump(mode="json")
    if checks:
        body["checks"] = [c.model_dump(mode="json", exclude_defaults=True) for c in checks]
    return Message(role="assistant", content=json.dumps(body, indent=1))


def design_messages(task: Task) -> list[Message]:
    return [_system(_DESIGN, task), task_message(task)]


def failure_report(diagnosis: Diagnosis, steps: list[StepResult],
                   checks: list[CheckResult]) -> str:
    """What went wrong, for the model: class, evidence, then the logs of what failed."""
    lines = [f"Failure class: {diagnosis.failure_class}", f"Summary: {diagnosis.summary}",
             "Evidence:", *[f"  {e}" for e in diagnosis.evidence], ""]
    if diagnosis.advice:
        lines[2:2] = [diagnosis.advice]
    for step in steps:
        state = "ok" if step.ok else ("TIMED OUT" if step.timed_out else
                                      f"FAILED (exit {step.exit_status})")
        lines.append(f"--- {step.artifact} on {step.node}: {state} ({step.seconds:.0f}s)")
        if not step.ok:
            lines.append(tail(step.output(), 4000))
    for check in checks:
        mark = "passed" if check.passed else "FAILED"
        lines.append(f"--- check {check.name!r} on {check.node}: {mark}: {check.detail}")
        if not check.passed and (check.stdout or check.stderr):
            lines.append(tail((check.stdout + "\n" + check.stderr).strip(), 1500))
    return "\n".join(lines)


def retry_messages(task: Task, artifacts: object, topology: Topology, checks: list,
                   report: str) -> list[Message]:
    return [_system(_RETRY, task), task_message(task),
            _artifacts_message(artifacts, topology, checks),
            Message(role="user", content="The attempt failed.\n" + report)]


def troubleshoot_messages(task: Task, artifacts: object, topology: Topology, checks: list,
                          report: str, turns: int) -> list[Message]:
    return [_system(_TROUBLESHOOT, task, turns=turns), task_message(task),
            _artifacts_message(artifacts, topology, checks),
            Message(role="user", content="The checks failed; the cluster is live.\n" + report)]


def command_output_message(node: str, command: str, exit_status: int | None, output: str,
                           left: int) -> Message:
    status = "timed out" if exit_status is None else f"exit {exit_status}"
    return Message(role="user", content=(
        f"[{node}] $ {command}\n({status})\n{tail(output, 6000)}\n"
        f"({left} command{'s' if left != 1 else ''} left)"))


def synthesize_messages(task: Task, artifacts: object, topology: Topology, checks: list,
                        history: str) -> list[Message]:
    return [_system(_SYNTHESIZE, task), task_message(task),
            _artifacts_message(artifacts, topology, checks),
            Message(role="user", content="These artifacts passed every check.\n" + history)]
