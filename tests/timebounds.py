"""Time bounds in tests: a goal we aim for (measured, printed, reported at the end of the
session) and a generous bound that fails the test.

A hard "within 1.0 s" held on a quiet machine and failed now and then on a busy one
(2 shared cores, VMs under TCG) without anything being wrong: a flake that hid the
figure. Now the figure is always printed; a miss of the goal is reported, and only a
miss of the bound (``goal * ANTRIEB_TIME_SLACK``, default 5) fails. Bench figures
belong to ``antrieb bench``, not here.

Example::

    within("stop -> cluster down", down_at - t0, goal=1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SLACK = float(os.environ.get("ANTRIEB_TIME_SLACK", "5"))


@dataclass(frozen=True)
class Measured:
    what: str
    seconds: float
    goal: float
    bound: float

    def line(self) -> str:
        verdict = "ok" if self.seconds <= self.goal else "OVER GOAL"
        return (f"{self.what}: {self.seconds:.2f} s (goal {self.goal:g} s, "
                f"bound {self.bound:g} s) {verdict}")


MEASURED: list[Measured] = []


def bound_of(goal: float, bound: float | None = None) -> float:
    return bound if bound is not None else goal * SLACK


def within(what: str, seconds: float, goal: float, bound: float | None = None) -> None:
    """Record ``seconds``, print it, and fail only past the generous bound."""
    m = Measured(what, seconds, goal, bound_of(goal, bound))
    MEASURED.append(m)
    print(m.line())
    assert seconds < m.bound, f"{what} took {seconds:.2f} s, past the bound: {m.line()}"
