"""Tasks, registered by name (``medslm eval --tasks ls``)."""

from medslm.tasks.base import TASKS, Task, get_task

_MC = "medslm.tasks.multiple_choice:make"
for _n in ("pubmedqa", "medmcqa", "medqa_4options") + tuple(
        f"mmlu_{s}" for s in ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                              "medical_genetics", "professional_medicine")):
    TASKS.add(_n, _MC)
    TASKS.add(_n + "_cot", _MC)
TASKS.add("medquad", "medslm.tasks.generation:make")
TASKS.add("medtext", "medslm.tasks.generation:make")
TASKS.add("amega", "medslm.tasks.generation:make")
TASKS.add("drugcomb_synergy", "medslm.tasks.classification:make")
TASKS.add("mimic3_mortality", "medslm.tasks.classification:make")
TASKS.add("medppl", "medslm.tasks.perplexity:make")

__all__ = ["TASKS", "Task", "get_task"]
