"""MedText: a presentation -> diagnosis and treatment (a fixed 10% held-out split)."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="medtext", family="open_generation", dataset="medtext", split="test",
    description="MedText diagnosis/treatment (fixed held-out split)",
    prompt="{question}\n", train={"space": False},
))
