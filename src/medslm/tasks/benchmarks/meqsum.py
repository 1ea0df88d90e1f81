"""MeQSum: summarize a consumer's health question as one short question (medslm's fixed dev split)."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="meqsum", family="open_generation", dataset="meqsum", split="dev",
    description="MeQSum consumer health question summarization (fixed 10% dev split)",
    prompt="Summarize the patient's question as one short question.\nQuestion: {question}\nSummary:",
    metrics=("rouge1", "rouge2"), train={"space": True},
    options={"until": ("\n",), "max_tokens": 48}, group="summarization",
))
