"""Playback of a recorded run: its ``events.jsonl`` parsed back into the typed events and
fed to the same widget a live run uses, at an adjustable speed.

Nothing is re-run and nothing is invented: the events are the ones the engine emitted
during the real run on VMs, with their recorded times; only the pauses between them
are shortened (``speed``) and capped (``max_gap``). The header says it is a playback
and when the run was recorded.

Example::

    from antrieb.notebook import play
    play("nginx-lb", speed=40)        # an example's recorded run, or a run id, or a folder
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from antrieb import events
from antrieb.errors import TaskError, UnknownNameError
from antrieb.notebook.state import RunState, RunView, artifact_texts


@dataclass
class RecordedRun:
    """One run record read back: ``run.json``, and its events as typed events."""

    folder: Path
    record: dict[str, Any]
    events: list[events.Event]
    skipped: list[str] = field(default_factory=list)  # lines that were not events

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id", self.folder.name))

    def task_artifacts(self) -> dict[str, str]:
        return artifact_texts(self.record.get("task") or {})

    def result(self) -> Any:
        """The recorded :class:`~antrieb.converge.RunResult` (its record is this folder)."""
        from antrieb.converge.results import RunResult

        data = dict(self.record.get("result") or {})
        data["record_dir"] = str(self.folder)
        return RunResult.model_validate(data)

    def state(self) -> RunState:
        """A fresh :class:`RunState` that knows this run (and the task's own code)."""
        return RunState(run_id=self.run_id, task_artifacts=self.task_artifacts())

    def view(self) -> RunView:
        """The whole run folded at once (for static reports)."""
        state = self.state()
        for event in self.events:
            state.apply(event)
        state.view.playback = self.provenance()
        return state.view

    def provenance(self, speed: float | None = None) -> dict[str, Any]:
        accel = next((e.accel for e in self.events if isinstance(e, events.ClusterReady)), "?")
        return {"run_id": self.run_id, "folder": str(self.folder), "speed": speed,
                "recorded_at": self.record.get("created"), "accel": accel}


def resolve(source: str | Path) -> Path:
    """The record folder of ``source``: a folder, an example name or a run id."""
    path = Path(source)
    if (path / "run.json").exists():
        return path
    from antrieb.examples import load_example, names

    if str(source) in names():
        folder = load_example(str(source)).reference_run()
        if folder is None:
            raise TaskError(str(source), "this example ships no recorded run yet")
        return folder
    from antrieb.converge.record import run_path

    try:
        return run_path(str(source))
    except UnknownNameError as exc:
        raise UnknownNameError("recorded run (folder, example or run id)", str(source),
                               [*names(), *exc.known][:30]) from exc


def load_recorded(source: str | Path) -> RecordedRun:
    """Read a run record; a torn or unknown line is skipped and listed, never fatal."""
    folder = resolve(source)
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TaskError(str(folder / "run.json"), f"unreadable run record: {exc}") from exc
    parsed: list[events.Event] = []
    skipped: list[str] = []
    path = folder / "events.jsonl"
    # split on "\n" only: str.splitlines() also splits on U+0085 and U+2028, which JSON
    # keeps raw inside strings (a model's answer may hold them)
    lines = path.read_text(encoding="utf-8").split("\n") if path.exists() else []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            parsed.append(events.event_adapter.validate_json(line))
        except ValidationError as exc:
            skipped.append(f"line {n}: {exc.errors()[0].get('msg', exc)}"[:200])
    return RecordedRun(folder, record, parsed, skipped)


def replay_events(recorded: RecordedRun, listener: Callable[[events.Event], None], *,
                  speed: float | None = 30.0, max_gap: float = 1.5) -> None:
    """Call ``listener`` with each recorded event, pausing ``gap / speed`` (at most
    ``max_gap`` seconds) between them; ``speed`` None or 0 means no pauses."""
    previous: float | None = None
    for event in recorded.events:
        if speed and previous is not None:
            time.sleep(min(max(0.0, event.at - previous) / speed, max_gap))
        previous = event.at
        listener(event)


def play(source: str | Path, *, speed: float | None = 30.0, max_gap: float = 1.5,
         show: bool = True) -> Any:
    """Play a recorded run into a new :class:`~antrieb.notebook.widget.RunWidget`.

    Blocks until the playback ends (Ctrl-C / interrupt stops it where it is) and
    returns the widget, whose output keeps a static HTML copy of the run.
    """
    from antrieb.notebook.widget import RunWidget

    recorded = load_recorded(source)
    state = recorded.state()
    state.view.playback = recorded.provenance(speed or None)
    widget = RunWidget(state)
    if show:
        widget.display()
    try:
        replay_events(recorded, widget.on_event, speed=speed, max_gap=max_gap)
    except KeyboardInterrupt:
        state.view.reason = "playback interrupted"
    finally:
        widget.finish()
        _link_to_experiment(recorded)
    return widget


def _link_to_experiment(recorded: RecordedRun) -> None:
    """Inside an experiment, note which recorded run this notebook showed."""
    from antrieb.notebook import experiment_record

    experiment_record.note_recorded_run(recorded.run_id, recorded.folder)
