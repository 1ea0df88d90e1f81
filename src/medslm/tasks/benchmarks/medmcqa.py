"""MedMCQA dev set (``validation``; the test labels are hidden upstream), lm-evaluation-harness's prompt."""

from medslm.tasks.spec import LETTERS, TaskSpec, register_task

register_task(TaskSpec(
    name="medmcqa", family="multiple_choice", dataset="medmcqa", split="validation",
    description="MedMCQA dev (validation)",
    prompt="Question: {question}\nChoices:\n{options}Answer:", choices=LETTERS, fewshot_split="train", cot=True,
    train={"explanation": ("exp", "explanation"), "prefix": "Explanation: "},
    rag={"query": "question+options"},
))
