"""MedQuAD consumer-health questions answered in free text (the answered pairs of the test split)."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="medquad", family="open_generation", dataset="medquad", split="test",
    description="MedQuAD consumer-health QA (answered test pairs)",
    prompt="Question: {question}\nAnswer:", train={"space": True},
    chat_prompt="{question}",  # in a chat turn, the question as a person asks it
))
