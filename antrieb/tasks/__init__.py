"""The task catalogue: tasks with proven checks and two known answers each.

Each task (:class:`CatalogueTask`) is a converge :class:`~antrieb.converge.Task` with a
fixed topology and checks, a **reference** (artifacts that pass every check) and a
**near miss** (artifacts a model could well write that fail at least one). The five
curated examples are tasks too. The evaluation harness (:mod:`antrieb.eval`) runs models
over them; ``antrieb tasks verify`` proves on real VMs that the checks fail on untouched
nodes, pass with the reference and catch the near miss.

- :mod:`~antrieb.tasks.model`: the task and its answers;
- :mod:`~antrieb.tasks.load`: the YAML files of ``catalogue/`` (and the examples);
- :mod:`~antrieb.tasks.trivial`: the static rule refusing checks anything passes;
- :mod:`~antrieb.tasks.verify`: the three trials on fresh clusters;
- :mod:`~antrieb.tasks.records`: when each task was last verified, and how it went.

Example::

    from antrieb.tasks import list_tasks, load_task, verify_task

    [(t.name, t.category) for t in list_tasks()]
    verify_task(load_task("python-unit")).result   # "passed" (boots VMs)
"""

from __future__ import annotations

from antrieb.tasks.load import list_tasks, load_task, load_task_file, names, refusals
from antrieb.tasks.model import CATEGORIES, CatalogueTask
from antrieb.tasks.records import Verification, last_verification, verifications
from antrieb.tasks.trivial import trivial_reasons
from antrieb.tasks.verify import run_trial, verify_task

__all__ = [
    "CATEGORIES",
    "CatalogueTask",
    "Verification",
    "last_verification",
    "list_tasks",
    "load_task",
    "load_task_file",
    "names",
    "refusals",
    "run_trial",
    "trivial_reasons",
    "verifications",
    "verify_task",
]
