"""Tasks, registered by name (``medslm eval --tasks ls``): one spec per benchmark in
``benchmarks/`` (see :mod:`medslm.tasks.spec`), built by its family's class."""

from medslm.tasks.base import TASKS, Task, get_task
from medslm.tasks.spec import discover

for _n in discover():
    TASKS.add(_n, "medslm.tasks.spec:build")

__all__ = ["TASKS", "Task", "get_task"]
