"""antrieb in Jupyter: live run widgets, playback of recorded runs, static reports,
papermill experiments.

Example::

    from antrieb.notebook import converge, play, run_experiment
    play("nginx-lb")                       # a real recorded run, replayed into the widget
    run = converge("nginx-lb")             # the same example live on VMs
    df = run_experiment("notebooks/experiment.ipynb", grid={"example": ["nginx-lb"]})
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunState": "antrieb.notebook.state",
    "RunView": "antrieb.notebook.state",
    "RunWidget": "antrieb.notebook.widget",
    "ClusterWidget": "antrieb.notebook.cluster_view",
    "cluster_html": "antrieb.notebook.cluster_view",
    "LiveRun": "antrieb.notebook.live",
    "converge": "antrieb.notebook.live",
    "play": "antrieb.notebook.playback",
    "load_recorded": "antrieb.notebook.playback",
    "report": "antrieb.notebook.reports",
    "result_html": "antrieb.notebook.reports",
    "run_experiment": "antrieb.notebook.experiments",
    "rerun_experiment": "antrieb.notebook.experiments",
    "load_experiment": "antrieb.notebook.experiments",
    "experiment_frame": "antrieb.notebook.experiments",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'antrieb.notebook' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _setup() -> None:
    from antrieb.notebook.reports import register_formatters

    register_formatters()


_setup()
