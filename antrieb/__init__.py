"""antrieb: run LLM-written infrastructure code on throw-away clusters of real VMs.

Example::

    from antrieb import Cluster

    with Cluster(nodes=2) as cluster:
        print(cluster["node1"].run("ssh node2 hostname").stdout)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Loaded on first use: `import antrieb` stays cheap (the supervisor process imports
# antrieb.vm.* and must start fast) and never pulls optional dependencies.
_EXPORTS = {
    "Cluster": "antrieb.cluster",
    "Node": "antrieb.cluster",
    "NodeSpec": "antrieb.cluster",
    "Result": "antrieb.ssh",
    "AntriebError": "antrieb.errors",
    "events": "antrieb.events",
    "runs": "antrieb.store",
}

if TYPE_CHECKING:
    from antrieb import events
    from antrieb.cluster import Cluster, Node, NodeSpec
    from antrieb.errors import AntriebError
    from antrieb.ssh import Result
    from antrieb.store import runs

__all__ = ["AntriebError", "Cluster", "Node", "NodeSpec", "Result", "events", "runs"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'antrieb' has no attribute {name!r}")
    mod = importlib.import_module(module)
    return mod if name == "events" else getattr(mod, name)
