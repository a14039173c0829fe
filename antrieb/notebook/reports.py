"""Static views of finished runs: what an executed notebook keeps when no kernel runs.

A :class:`~antrieb.converge.RunResult` with a record renders from its ``events.jsonl``
(the same view the live widget shows); one without a record shows its summary.

Example::

    report("haproxy-nginx")      # a recorded run, as static HTML in the cell
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from antrieb.notebook import render


class RunReport:
    """A recorded run rendered once, as HTML (``_repr_html_``)."""

    def __init__(self, source: str | Path) -> None:
        from antrieb.notebook.playback import load_recorded

        self.recorded = load_recorded(source)
        self.view = self.recorded.view()

    def _repr_html_(self) -> str:
        return render.page(self.view)

    def __repr__(self) -> str:
        return f"<antrieb run report {self.view.run_id}: {self.view.status}>"


def report(source: str | Path) -> RunReport:
    """The static report of a recorded run (a folder, an example name or a run id)."""
    return RunReport(source)


def result_html(result: Any) -> str:
    """HTML of a :class:`~antrieb.converge.RunResult`."""
    if result.record_dir and (Path(result.record_dir) / "events.jsonl").exists():
        from antrieb.converge.record import runs_dir

        view = RunReport(result.record_dir).view
        if Path(result.record_dir).resolve().parent == runs_dir().resolve():
            view.playback = None  # a run of this machine, not a shipped recording
        return render.page(view)
    fig = result.figures()
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                   for k, v in fig.items() if k != "per_iteration")
    final = ""
    if result.final is not None:
        final = "".join(f"<div><b>{escape(k)}</b><pre>{escape(t)}</pre></div>"
                        for k, t in result.final.texts().items())
    return (f'{render.CSS}<div class="antrieb-run"><h4>Run {escape(result.run_id)}: '
            f'<span class="antrieb-badge {escape(result.status)}">{escape(result.status)}'
            f"</span></h4><div>{escape(result.reason)}</div><table>{rows}</table>{final}</div>")


def register_formatters() -> None:
    """Teach IPython the HTML of antrieb's objects that do not carry their own repr."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    html = ip.display_formatter.formatters["text/html"]
    html.for_type_by_name("antrieb.converge.results", "RunResult", result_html)
