"""Timing charts of a run (plotly): a stacked bar per iteration and a per-node view.

Both read the figures the engine emitted (iteration timings, step and check seconds,
the seconds each node took to be ready); nothing is measured here.

Example::

    iteration_figure(state.view).show()
"""

from __future__ import annotations

from typing import Any

from antrieb.notebook.render import SEGMENTS, layer_note, segment_seconds
from antrieb.notebook.state import RunView

NODE_SEGMENTS = [("ready", "#0969da"), ("package installs", "#d4a72c"),
                 ("rest of apply", "#bf8700"), ("checks", "#1a7f37")]


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title, "font": {"size": 14}}, "barmode": "stack",
            "autosize": True,
            "height": 300, "margin": {"l": 60, "r": 10, "t": 40, "b": 40},
            "legend": {"orientation": "h", "y": -0.2}, "template": "plotly_white", **extra}


def iteration_series(v: RunView) -> tuple[list[str], dict[str, list[float]]]:
    """x labels of finished iterations and, per segment, its seconds in each."""
    done = [it for it in v.iterations if it.passed is not None]
    seconds = [segment_seconds(it) for it in done]
    return ([f"#{it.number} {it.phase}{layer_note(it)}" for it in done],
            {label: [round(s[label], 2) for s in seconds] for label, _, _ in SEGMENTS})


def iteration_figure(v: RunView) -> Any:
    """Seconds per iteration, stacked: cluster up, apply, checks, re-run, troubleshoot,
    LLM, teardown."""
    import plotly.graph_objects as go

    x, ys = iteration_series(v)
    fig = go.Figure(layout=_layout("Time per iteration (s)", yaxis={"title": "seconds"}))
    for label, colour, _ in SEGMENTS:
        fig.add_bar(name=label, x=x, y=ys[label], marker_color=colour,
                    hovertemplate="%{x}: " + label + " %{y:.1f}s")
    return fig


def node_series(v: RunView) -> tuple[list[str], dict[str, list[float]]]:
    """Per iteration and node (y labels) and, per segment, its seconds: ready, package
    installs, the rest of apply, checks."""
    y: list[str] = []
    xs: dict[str, list[float]] = {label: [] for label, _ in NODE_SEGMENTS}
    for it in v.iterations:
        for node in it.roles:
            steps = [s for s in it.steps if s.node == node]
            install = sum(s.install_s for s in steps)
            y.append(f"#{it.number} {node}")
            for label, value in (
                    ("ready", it.node_boot_s.get(node, 0.0)),
                    ("package installs", install),
                    ("rest of apply", max(0.0, sum(s.seconds for s in steps) - install)),
                    ("checks", sum(c.seconds for c in it.checks if c.node == node))):
                xs[label].append(round(value, 2))
    return y, xs


def node_height(rows: int) -> int:
    return max(260, 60 + 22 * rows)


def node_figure(v: RunView) -> Any:
    """Seconds per node of each iteration: ready, installs, the rest of apply, checks."""
    import plotly.graph_objects as go

    y, xs = node_series(v)
    fig = go.Figure(layout=_layout("Time per node (s)", height=node_height(len(y)),
                                   yaxis={"autorange": "reversed"}))
    for label, colour in NODE_SEGMENTS:
        fig.add_bar(name=label, y=y, x=xs[label], orientation="h", marker_color=colour,
                    hovertemplate="%{y}: " + label + " %{x:.1f}s")
    return fig


def figure_bundle(fig: Any) -> dict[str, Any]:
    """A figure for a notebook output: plotly's mimetype for JupyterLab (drawn by the
    renderer plotly ships) and an HTML version for nbconvert and code hosts."""
    import json

    return {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
            "text/html": fig.to_html(full_html=False, include_plotlyjs="cdn"),
            "text/plain": f"<plotly figure: {fig.layout.title.text}>"}


def show(fig: Any) -> None:
    """Display ``fig`` with :func:`figure_bundle`."""
    from IPython.display import display

    display(figure_bundle(fig), raw=True)
