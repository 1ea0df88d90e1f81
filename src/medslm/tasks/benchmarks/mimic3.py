"""MIMIC-III in-hospital mortality from the admission summary (credentialed data, local path only)."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="mimic3_mortality", family="classification", dataset="mimic3", split="test",
    description="MIMIC-III in-hospital mortality from the admission summary", fewshot_split="train",
    options={"question": "Did the patient die in the hospital?"},
))
