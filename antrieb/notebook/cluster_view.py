"""A cluster in a notebook: a compact live widget and a static HTML table.

The widget follows the cluster's own events (state, each VM's state and IP, ready
times); the static table reads the Cluster object as it is now.

Example::

    with Cluster(nodes=3) as cluster:
        cluster          # the cell shows the compact widget (and its static copy)
"""

from __future__ import annotations

import threading
from html import escape
from typing import Any

from antrieb import events
from antrieb.notebook.render import CSS


def cluster_html(cluster: Any, node_state: dict[str, str] | None = None,
                 ready_s: dict[str, float] | None = None) -> str:
    """The cluster as an HTML table: id, state, and per node role, image, IP, state."""
    node_state = node_state or {n.name: str(n.state) for n in getattr(cluster, "nodes", [])}
    ready_s = ready_s or {}
    rows = []
    for plan in cluster.plans:
        state = node_state.get(plan.name, "pending")
        ready = f"{ready_s[plan.name]:.2f}s" if plan.name in ready_s else ""
        rows.append(f"<tr><td>{escape(plan.name)}</td><td>{escape(plan.role)}</td>"
                    f"<td>{escape(plan.image)}</td><td>{escape(plan.ip)}</td>"
                    f'<td><span class="antrieb-badge {escape(state)}">{escape(state)}</span></td>'
                    f"<td>{ready}</td></tr>")
    state = str(cluster.state)
    return (f'{CSS}<div class="antrieb-run antrieb-cluster"><b>Cluster {escape(cluster.id)}</b> '
            f'<span class="antrieb-badge {escape(state)}">{escape(state)}</span> '
            f'<span class="antrieb-muted">{len(cluster.plans)} node(s)</span>'
            "<table><tr><th>node</th><th>role</th><th>image</th><th>IP</th><th>state</th>"
            f"<th>ready</th></tr>{''.join(rows)}</table></div>")


class ClusterWidget:
    """A compact live view of one cluster; subscribes to its events until it is down."""

    def __init__(self, cluster: Any) -> None:
        import ipywidgets as w

        self.cluster = cluster
        self.node_state = {n.name: str(n.state) for n in getattr(cluster, "nodes", [])}
        self.ready_s: dict[str, float] = {}
        self._lock = threading.Lock()
        self.view = w.HTML()
        self.view.add_class("antrieb-cluster-widget")
        self._unsubscribe = events.subscribe(self.on_event)
        self.refresh()

    def on_event(self, event: events.Event) -> None:
        if getattr(event, "cluster", None) != self.cluster.id:
            return
        with self._lock:
            if isinstance(event, events.VMStateChanged):
                self.node_state[event.node] = str(event.state)
            elif isinstance(event, events.ClusterReady):
                self.ready_s.update(event.node_seconds)
        self.refresh()
        if isinstance(event, events.ClusterStateChanged) and event.state in (
                events.ClusterState.DOWN, events.ClusterState.FAILED):
            self._unsubscribe()

    def html(self) -> str:
        with self._lock:
            return cluster_html(self.cluster, dict(self.node_state), dict(self.ready_s))

    def refresh(self) -> None:
        self.view.value = self.html()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.view._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = self.html()
        return bundle


def cluster_bundle(cluster: Any) -> dict[str, Any]:
    """What a Cluster shows in a notebook: the compact widget when a kernel with
    ipywidgets is there, always the static table."""
    try:
        return ClusterWidget(cluster)._repr_mimebundle_()
    except ImportError:
        return {"text/html": cluster_html(cluster), "text/plain": repr(cluster)}
