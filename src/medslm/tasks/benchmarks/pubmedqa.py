"""PubMedQA PQA-L (yes/no/maybe), lm-evaluation-harness's prompt; macro-F1 is the official metric.

The mirror holds only the non-test half; the official test split when test_ground_truth.json is
present. Default split ``auto``: test when available, else train (stated in results)."""

from medslm.tasks.spec import TaskSpec, register_task


def question_only(e) -> str:
    """Retrieval arm: the question without its abstract (the abstract would be the answer)."""
    return f"Question: {e.question}\nAnswer:"


register_task(TaskSpec(
    name="pubmedqa", family="multiple_choice", dataset="pubmedqa", split="auto",
    description="PubMedQA PQA-L yes/no/maybe",
    prompt="Abstract: {context}\nQuestion: {question}\nAnswer:", fewshot_split="train",
    metrics=("macro_f1",), cot=True,
    train={"explanation": ("long_answer",), "prefix": ""},
    rag={"query": "question", "prompt": question_only,
         "own_doc": lambda e: f"pubmed-{str(e.id).split('-')[-1]}"},
))
