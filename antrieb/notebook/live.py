"""A convergence run in a notebook: the engine in a thread, the widget in the cell.

The run goes on in a background thread; the cell waits in short joins, so the kernel
stays interruptible: an interrupt (Ctrl-C, the stop square) calls
:meth:`Converger.stop`, the cluster goes down within a second and the run is recorded
as ``stopped``. ``wait=False`` returns at once and leaves the kernel free.

Example::

    from antrieb.notebook import converge
    run = converge("nginx-lb")              # an example (replayed model, real VMs)
    run.result.status                        # "converged"
"""

from __future__ import annotations

import threading
from typing import Any

from antrieb import events
from antrieb.notebook.state import RunState, artifact_texts
from antrieb.notebook.widget import RunWidget


class LiveRun:
    """One :class:`~antrieb.converge.Converger` running with a :class:`RunWidget`."""

    def __init__(self, converger: Any) -> None:
        self.converger = converger
        task = converger.task.model_dump(mode="json")
        self.state = RunState(run_id=converger.run_id, task_artifacts=artifact_texts(task))
        self.widget = RunWidget(self.state, on_stop=self.stop)
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"antrieb-{converger.run_id}",
                                        daemon=True)
        self._unsubscribe = lambda: None

    def _run(self) -> None:
        try:
            self.result = self.converger.run()
        except BaseException as exc:  # run() reports outcomes itself; this is a bug
            self.error = exc
        finally:
            self._unsubscribe()
            self.widget.finish()

    def start(self) -> LiveRun:
        self._unsubscribe = events.subscribe(self.widget.on_event)
        self._thread.start()
        return self

    def stop(self, reason: str = "stopped from the notebook") -> None:
        self.converger.stop(reason)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> Any:
        """Wait for the end (interruptible) and return the :class:`RunResult`."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
                self.widget.refresh()  # the header's elapsed time moves on
        except KeyboardInterrupt:
            self.stop("interrupted (kernel interrupt)")
            self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.widget._repr_mimebundle_(**kwargs)


def converge(what: Any, *, provider: Any = None, budgets: Any = None, wait: bool = True,
             **kwargs: Any) -> LiveRun:
    """Run ``what`` (an example name, a :class:`Task` or a :class:`Converger`) live,
    showing its widget in the cell. With ``wait`` (default) returns once it ended."""
    from antrieb.converge import Converger, Task

    if isinstance(what, Converger):
        conv = what
    elif isinstance(what, Task):
        conv = Converger(what, provider=provider, budgets=budgets, **kwargs)
    else:
        from antrieb.examples import load_example

        example = load_example(str(what))
        if provider is not None:
            conv = Converger(example.task, provider=provider, budgets=budgets,
                             meta={"example": example.name}, **kwargs)
        else:
            conv = example.converger(budgets=budgets, **kwargs)
    run = LiveRun(conv)
    run.widget.display()
    run.start()
    if wait:
        run.wait()
    return run
