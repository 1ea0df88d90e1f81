"""The six medical subjects of MMLU, lm-evaluation-harness's prompt (a subject header, few-shot
examples from ``dev``)."""

from medslm.tasks.spec import LETTERS, TaskSpec, register_task

SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
            "professional_medicine")


def text(e) -> str:
    opts = "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(e.options))
    return f"{e.question.strip()}\n{opts}Answer:"


for subject in SUBJECTS:
    register_task(TaskSpec(
        name=f"mmlu_{subject}", family="multiple_choice", dataset="mmlu_medical", split="test",
        description=f"MMLU {subject.replace('_', ' ')}", prompt=text, choices=LETTERS, fewshot_split="dev",
        subject=subject, cot=True, rag={"query": "question+options"},
    ))
