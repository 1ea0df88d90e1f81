"""MedSafetyBench: does the model decline harmful medical requests? (medslm's fixed dev split of the
train part; the upstream test part is kept aside). Scored per AMA category."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="medsafety", family="safety", dataset="medsafety", split="dev",
    description="MedSafetyBench harmful medical requests: refusal rate (fixed 10% dev split)",
    prompt="Question: {question}\nAnswer:", train={"space": True},
    chat_prompt="{question}",  # in a chat turn, the request as a person types it
))
