"""What a convergence run works on: the task, its checks, the topology and the artifacts.

All models are strict pydantic models (unknown fields refused, no silent coercion), so
a model's answer that names 7 nodes, an unknown image or a role without a node fails
validation with a reason that :func:`antrieb.llm.ask` sends back to the model.

Limits that depend on the task (node count, allowed images, the tool) are checked
against the :class:`Constraints` in force (see :func:`constrained`), so the same models
serve the task file and the model's answers.

Example::

    from antrieb.converge.models import Task

    task = Task.model_validate({
        "name": "web",
        "request": "nginx on one node serving 'hello'",
        "checks": [{"name": "hello", "node": "web1", "command": "curl -s localhost",
                    "expect": {"stdout_regex": ["hello"]}}],
    })
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from antrieb import config

Tool = Literal["shell", "ansible"]
_HOSTNAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
RESERVED_NAMES = {"localhost", "gateway", "golden"}
MAX_SCRIPT_CHARS = 60_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@cache
def known_images() -> tuple[str, ...]:
    """The image names of the catalogue (read once per process)."""
    from antrieb.vm.images import catalogue

    return tuple(sorted(catalogue()))


class Constraints(Strict):
    """What the task allows; validation of answers reads it from :func:`constrained`."""

    max_nodes: int = config.MAX_NODES
    images: tuple[str, ...] | None = None  # None: the whole catalogue
    tool: Tool | None = None
    roles: tuple[str, ...] | None = None  # roles the artifacts may name (the topology's)
    nodes: tuple[str, ...] | None = None  # node names checks and commands may name
    need: tuple[str, ...] = ()  # parts a design answer must give ("topology", "checks")


_constraints: contextvars.ContextVar[Constraints] = contextvars.ContextVar(
    "antrieb_converge_constraints", default=Constraints())  # noqa: B039 (immutable model)


@contextlib.contextmanager
def constrained(constraints: Constraints) -> Iterator[None]:
    """Validate models inside this block against ``constraints``."""
    token = _constraints.set(constraints)
    try:
        yield
    finally:
        _constraints.reset(token)


def current_constraints() -> Constraints:
    return _constraints.get()


# -- topology ---------------------------------------------------------------------------


class NodeDesign(Strict):
    """One node: its hostname, its role (which script it runs) and its image."""

    name: str
    role: str
    image: str = "debian-12"

    @field_validator("name")
    @classmethod
    def _hostname(cls, name: str) -> str:
        if not _HOSTNAME.match(name) or name in RESERVED_NAMES:
            raise ValueError(f"node name {name!r} is not a lowercase hostname label "
                             f"(a-z, 0-9, '-'; not {sorted(RESERVED_NAMES)})")
        return name

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if not _ROLE.match(role):
            raise ValueError(f"role {role!r} must match {_ROLE.pattern}")
        return role

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        allowed = current_constraints().images or known_images()
        if image not in allowed:
            raise ValueError(f"unknown image {image!r}; use one of: {', '.join(allowed)}")
        return image


class Topology(Strict):
    """The nodes of the cluster, 1 to 4 (or fewer if the task says so)."""

    nodes: list[NodeDesign] = Field(min_length=1)

    @model_validator(mode="after")
    def _limits(self) -> Topology:
        limit = min(current_constraints().max_nodes, config.MAX_NODES)
        if len(self.nodes) > limit:
            raise ValueError(f"{len(self.nodes)} nodes asked for, at most {limit} allowed")
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node names must be distinct: {', '.join(dupes)} repeated")
        return self

    @property
    def roles(self) -> list[str]:
        """The roles in the order their first node appears."""
        return list(dict.fromkeys(n.role for n in self.nodes))

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def nodes_of(self, role: str) -> list[NodeDesign]:
        return [n for n in self.nodes if n.role == role]


# -- artifacts --------------------------------------------------------------------------


class ShellArtifacts(Strict):
    """One bash script per role; ``stages`` orders the roles (roles of a stage run in
    parallel, stages one after the other). Without ``stages`` every role runs at once."""

    tool: Literal["shell"] = "shell"
    scripts: dict[str, Annotated[str, Field(min_length=1, max_length=MAX_SCRIPT_CHARS)]] = Field(
        min_length=1)
    stages: list[list[str]] | None = None

    @model_validator(mode="after")
    def _roles(self) -> ShellArtifacts:
        roles = current_constraints().roles
        if roles is not None:
            unknown = sorted(set(self.scripts) - set(roles))
            if unknown:
                raise ValueError(f"scripts for roles {unknown} that no node has; "
                                 f"the roles are {list(roles)}")
        if self.stages is not None:
            staged = [r for stage in self.stages for r in stage]
            if sorted(staged) != sorted(self.scripts):
                raise ValueError(f"stages must name every scripted role exactly once: stages "
                                 f"name {staged}, scripts are for {sorted(self.scripts)}")
        return self

    def ordered_stages(self) -> list[list[str]]:
        return self.stages if self.stages is not None else [list(self.scripts)]

    def texts(self) -> dict[str, str]:
        return dict(self.scripts)


class AnsibleArtifacts(Strict):
    """One playbook run with ``ansible-playbook`` on the ``control`` node. Without an
    ``inventory`` antrieb writes one: a group per role, every node by name."""

    tool: Literal["ansible"] = "ansible"
    control: str
    playbook: str = Field(min_length=1, max_length=MAX_SCRIPT_CHARS)
    inventory: str | None = None

    def texts(self) -> dict[str, str]:
        out = {"playbook": self.playbook}
        if self.inventory:
            out["inventory"] = self.inventory
        return out


Artifacts = Annotated[ShellArtifacts | AnsibleArtifacts, Field(discriminator="tool")]


# -- checks -----------------------------------------------------------------------------


class Expect(Strict):
    """What a check command must produce: exit status and patterns over stdout."""

    exit_status: int | None = 0  # None: any
    stdout_regex: list[str] = Field(default_factory=list)  # each must match (re.search)
    stdout_not_regex: list[str] = Field(default_factory=list)

    @field_validator("stdout_regex", "stdout_not_regex")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regular expression {p!r}: {exc}") from None
        return patterns


class ServiceRunning(Strict):
    kind: Literal["service_running"] = "service_running"
    service: str
    enabled: bool = False  # also require it enabled at boot


class PortListening(Strict):
    kind: Literal["port_listening"] = "port_listening"
    port: int = Field(ge=1, le=65535)
    address: str | None = None  # None: any address; "0.0.0.0": all addresses
    proto: Literal["tcp", "udp"] = "tcp"


class FileContains(Strict):
    kind: Literal["file_contains"] = "file_contains"
    path: str
    pattern: str


class PackageInstalled(Strict):
    kind: Literal["package_installed"] = "package_installed"
    package: str


HostAssertion = Annotated[ServiceRunning | PortListening | FileContains | PackageInstalled,
                          Field(discriminator="kind")]


class Check(Strict):
    """One check, run on ``node``: a command with expectations, or a host assertion
    (testinfra). A check "from" another node is a command run on that node, e.g.
    ``curl -s http://lb/`` on ``web1``.

    ``attempts``/``interval_s`` give services time to settle: the check passes if any
    attempt passes.
    """

    name: str = Field(min_length=1, max_length=200)
    node: str
    command: str | None = None
    expect: Expect = Field(default_factory=Expect)
    host: HostAssertion | None = None
    timeout_s: float = Field(default=60.0, gt=0, le=900)
    attempts: int = Field(default=3, ge=1, le=20)
    interval_s: float = Field(default=2.0, ge=0, le=60)

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        if (self.command is None) == (self.host is None):
            raise ValueError(f"check {self.name!r}: give either 'command' or 'host', "
                             "exactly one")
        return self


# -- the task ---------------------------------------------------------------------------


class Task(Strict):
    """What the user wants: a request in words, or their own code to deploy.

    Missing parts (topology, artifacts, checks) are proposed by the model in the
    design step; parts given here are kept as they are. With ``artifacts`` given, the
    run deploys the user's code and reports what it had to change (``findings``).
    """

    name: str = Field(default="task", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    request: str = Field(min_length=1, max_length=20_000)
    tool: Tool = "shell"
    max_nodes: int = Field(default=config.MAX_NODES, ge=1, le=config.MAX_NODES)
    images: list[str] | None = None
    topology: Topology | None = None
    artifacts: Artifacts | None = None
    checks: list[Check] = Field(default_factory=list)
    notes: str = ""  # hints for the model: versions, conventions...
    strict: bool = False  # residue the scripts leave behind fails the proof (else a finding)

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        if self.images:
            unknown = sorted(set(self.images) - set(known_images()))
            if unknown:
                raise ValueError(f"unknown images {unknown}; known: {list(known_images())}")
        if self.artifacts is not None and self.artifacts.tool != self.tool:
            raise ValueError(f"the task's tool is {self.tool!r} but its artifacts are "
                             f"{self.artifacts.tool!r}")
        if self.topology is not None:
            if len(self.topology.nodes) > self.max_nodes:
                raise ValueError(f"the topology has {len(self.topology.nodes)} nodes, "
                                 f"max_nodes is {self.max_nodes}")
            check_references(self.topology, self.checks, self.artifacts)
        return self

    def constraints(self, topology: Topology | None = None) -> Constraints:
        topo = topology or self.topology
        need = tuple(part for part, have in (("topology", topo), ("checks", self.checks))
                     if not have)
        return Constraints(max_nodes=self.max_nodes,
                           images=tuple(self.images) if self.images else None,
                           tool=self.tool, roles=tuple(topo.roles) if topo else None,
                           nodes=tuple(topo.names()) if topo else None, need=need)


def check_references(topology: Topology, checks: list[Check],
                     artifacts: ShellArtifacts | AnsibleArtifacts | None) -> None:
    """Raise ValueError if checks or artifacts name nodes or roles the topology lacks."""
    names = set(topology.names())
    for check in checks:
        if check.node not in names:
            raise ValueError(f"check {check.name!r} runs on {check.node!r}, which is not a "
                             f"node; nodes: {sorted(names)}")
    if isinstance(artifacts, ShellArtifacts):
        missing = sorted(set(artifacts.scripts) - set(topology.roles))
        if missing:
            raise ValueError(f"scripts for roles {missing} that no node has; roles: "
                             f"{topology.roles}")
    elif isinstance(artifacts, AnsibleArtifacts) and artifacts.control not in names:
        raise ValueError(f"the control node {artifacts.control!r} is not a node; nodes: "
                         f"{sorted(names)}")


ArtifactsT = ShellArtifacts | AnsibleArtifacts


class Budgets(BaseModel):
    """Limits of one run; exhausting one ends it with ``budget_exhausted``."""

    max_iterations: int = Field(default=8, ge=1, le=50)  # fresh clusters, proof included
    max_wall_s: float = Field(default=3600.0, gt=0)
    max_tokens: int = Field(default=400_000, ge=1)
    troubleshoot_turns: int = Field(default=8, ge=1, le=50)
    step_timeout_s: float = Field(default=900.0, gt=0)
