"""MedQA-USMLE with 4 options, lm-evaluation-harness's ``medqa_4options`` prompt."""

from medslm.tasks.spec import LETTERS, TaskSpec, register_task

register_task(TaskSpec(
    name="medqa_4options", family="multiple_choice", dataset="medqa", split="test",
    description="MedQA-USMLE 4 options",
    prompt="Question: {question}\n{options}Answer:", choices=LETTERS, fewshot_split="train", cot=True,
    train={"explanation": ("exp", "explanation"), "prefix": "Explanation: "},
    rag={"query": "question+options"},
))
