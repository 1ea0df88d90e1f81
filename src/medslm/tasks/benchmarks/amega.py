"""AMEGA guideline adherence: weighted rubric criteria per answer (evaluation only)."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="amega", family="rubric", dataset="amega", split="test",
    description="AMEGA guideline adherence (weighted criteria)",
    prompt="Case: {case}\n\nQuestion: {question}\nAnswer:",
))
