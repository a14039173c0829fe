"""The live run widget: ipywidgets panes and plotly charts over a :class:`RunState`.

Events arrive on any thread (the engine applies artifacts in worker threads); each one
is folded into the state and the panes whose HTML changed are updated, which sends a
comm message the front end applies at once, also while the cell is still running. The
widget never drives the run: a Stop button, when given a callback, only calls it.

:meth:`RunWidget.display` shows the live widget and, in the output after it, a static
HTML copy of the run, refreshed when the run ends: live front ends hide the copy (the
widget's CSS does), nbconvert HTML and code hosts show it, so an executed notebook reads
well without a kernel.

Example::

    w = RunWidget()
    display(w)
    with events.subscribed(w.on_event):
        Converger(task).run()
    w.finish()
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from antrieb import events
from antrieb.notebook import charts, render
from antrieb.notebook.state import RunState

# Events after which the charts change (their figures are redrawn only then).
_CHART_KINDS = {"iteration_finished", "cluster_state", "cluster_ready", "llm_call_finished",
                "run_finished", "troubleshoot_turn"}


PLOTLY_MIME = "application/vnd.plotly.v1+json"
# Where the widget is alive, its static copy (the output after it) is not needed.
HIDE_STATIC = "<style>.antrieb-static-copy{display:none}</style>"


def _plotly_output(fig: Any) -> dict[str, Any]:
    """A figure as the display_data output JupyterLab's plotly renderer draws (plotly
    ships that renderer; no plotly.js is embedded in the notebook)."""
    return {"output_type": "display_data", "metadata": {},
            "data": {PLOTLY_MIME: json.loads(fig.to_json()),
                     "text/plain": f"<plotly figure: {fig.layout.title.text}>"}}


class RunWidget:
    """Live view of one convergence run. ``on_event`` is the listener to subscribe."""

    def __init__(self, state: RunState | None = None, *,
                 on_stop: Callable[[], None] | None = None) -> None:
        import ipywidgets as w

        self.state = state or RunState()
        self._lock = threading.Lock()
        self._handle: Any = None
        self._static: Any = None
        self._drawn: Any = None
        self.header = w.HTML(layout=w.Layout(width="100%"))
        self.cluster = w.HTML()
        self.timeline = w.HTML(layout=w.Layout(width="100%"))
        self.transcript = w.HTML(layout=w.Layout(width="100%"))
        self.final = w.HTML(layout=w.Layout(width="100%"))
        # plotly figures inside Output widgets, replaced when the figures change: works
        # from any thread and needs no front-end code of ours
        self.iteration_chart = w.Output(layout=w.Layout(width="50%"))
        self.node_chart = w.Output(layout=w.Layout(width="50%"))
        charts_box = w.HBox([self.iteration_chart, self.node_chart],
                            layout=w.Layout(width="100%"))
        charts_box.add_class("antrieb-charts")
        children: list[Any] = [self.header, self.cluster, self.timeline, charts_box,
                               self.transcript, self.final]
        self.stop_button = None
        if on_stop is not None:
            self.stop_button = w.Button(description="Stop run", button_style="danger",
                                        icon="stop")
            self.stop_button.on_click(lambda _b: on_stop())
            children.insert(1, self.stop_button)
        self.box = w.VBox(children, layout=w.Layout(width="100%"))
        self.box.add_class("antrieb-run-widget")
        self.refresh(charts_too=True)

    # -- feeding ----------------------------------------------------------------------

    def on_event(self, event: events.Event) -> None:
        """Fold one event in and redraw what changed (safe from any thread)."""
        if self.state.apply(event):
            self.refresh(charts_too=event.kind in _CHART_KINDS)

    def refresh(self, charts_too: bool = False) -> None:
        with self._lock, self.state.lock:
            v = self.state.view
            css = render.CSS
            self.header.value = (f'{css}{HIDE_STATIC}<div class="antrieb-run">'
                                 f'{render.header(v)}</div>')
            self.cluster.value = f'<div class="antrieb-run">{render.cluster_panel(v)}</div>'
            self.timeline.value = f'<div class="antrieb-run">{render.timeline(v)}</div>'
            self.transcript.value = f'<div class="antrieb-run">{render.transcript(v)}</div>'
            self.final.value = f'<div class="antrieb-run">{render.final(v)}</div>'
            if charts_too:
                self._redraw(v)
            if self.stop_button is not None and v.status not in ("waiting", "running"):
                self.stop_button.disabled = True

    def _redraw(self, v: Any) -> None:
        """Replace the charts, only when their figures changed (each change is a
        message to the front end)."""
        series = (charts.iteration_series(v), charts.node_series(v))
        if series == self._drawn:
            return
        self._drawn = series
        self.iteration_chart.outputs = (_plotly_output(charts.iteration_figure(v)),)
        self.node_chart.outputs = (_plotly_output(charts.node_figure(v)),)

    def finish(self) -> None:
        """The run is over: final redraw, and the outputs' static copy brought up to date."""
        self.refresh(charts_too=True)
        if self._handle is not None:  # by display id: safe from the engine's thread
            self._handle.update(self._widget_bundle(), raw=True)
            self._static.update(StaticCopy(self))

    # -- display ----------------------------------------------------------------------

    def display(self) -> RunWidget:
        """Show the widget in the current cell, and after it a static HTML copy of the run
        that live front ends hide (the widget's CSS) and static renderers show (nbconvert
        without the widget scripts, code hosts)."""
        from IPython.display import display

        self._handle = display(self._widget_bundle(), raw=True, display_id=True)
        self._static = display(StaticCopy(self), display_id=True)
        return self

    def html(self) -> str:
        with self.state.lock:
            return render.page(self.state.view, now=time.time())

    def _widget_bundle(self) -> dict[str, Any]:
        bundle = dict(self.box._repr_mimebundle_() or {})
        v = self.state.view
        bundle["text/plain"] = f"<antrieb run {v.run_id}: {v.task_name} {v.status}>"
        return bundle

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {**self._widget_bundle(), "text/html": self.html()}


class StaticCopy:
    """The run as static HTML, in an output of its own next to the widget."""

    def __init__(self, widget: RunWidget) -> None:
        self.html = widget.html()

    def _repr_html_(self) -> str:
        return f'<div class="antrieb-static-copy">{self.html}</div>'
