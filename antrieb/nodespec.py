"""What a cluster is asked for: its nodes' names, roles and images, checked before
anything starts (bad input raises a :class:`~antrieb.errors.ConfigError` subclass)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from antrieb import config
from antrieb.errors import ConfigError, InvalidNameError, TooManyNodesError

_HOSTNAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
RESERVED_NAMES = {"localhost", "gateway", "golden"}


class NodeSpec(BaseModel):
    """One node of a cluster: its name, its role and its image."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: str = "node"
    image: str = "debian-12"

    @field_validator("name")
    @classmethod
    def _valid_hostname(cls, name: str) -> str:
        if not _HOSTNAME.match(name) or name in RESERVED_NAMES:
            raise InvalidNameError(
                f"invalid node name {name!r}: use a lowercase hostname label (a-z, 0-9, '-', "
                f"starting with a letter, at most 63 characters), not one of "
                f"{sorted(RESERVED_NAMES)}")
        return name


def node_spec(**fields: Any) -> NodeSpec:
    """A NodeSpec, with pydantic's validation error turned into ours."""
    try:
        return NodeSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if tuple(first["loc"]) == ("name",):
            raise InvalidNameError(message) from None
        raise ConfigError(f"bad node spec {fields!r}: {message}") from None


def as_specs(nodes: int | Sequence[NodeSpec | dict | str], image: str) -> list[NodeSpec]:
    """A cluster's ``nodes`` argument as checked node specs: a count (node1..nodeN) or a
    list of names, dicts or specs; :class:`ConfigError` subclasses for bad input."""
    if isinstance(nodes, bool) or not isinstance(nodes, int | list | tuple):
        raise ConfigError(f"nodes must be a count or a list of node specs, not {nodes!r}")
    if isinstance(nodes, int):
        if nodes < 1:
            raise ConfigError(f"a cluster needs at least one node, {nodes} were asked for")
        if nodes > config.MAX_NODES:
            raise TooManyNodesError(nodes, config.MAX_NODES)
        return [node_spec(name=f"node{i + 1}", image=image) for i in range(nodes)]
    if not nodes:
        raise ConfigError("a cluster needs at least one node, an empty list was given")
    if len(nodes) > config.MAX_NODES:
        raise TooManyNodesError(len(nodes), config.MAX_NODES)
    specs = []
    for item in nodes:
        if isinstance(item, NodeSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(node_spec(name=item, image=image))
        elif isinstance(item, dict):
            specs.append(node_spec(**{"image": image, **item}))
        else:
            raise ConfigError(f"bad node spec {item!r}: give a name, a dict or a NodeSpec")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidNameError(f"node names must be distinct: {', '.join(dupes)} repeated")
    return specs
