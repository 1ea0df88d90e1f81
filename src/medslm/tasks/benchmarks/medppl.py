"""Medical perplexity: word perplexity on MedQuAD answers and PubMedQA abstracts."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="medppl", family="perplexity", dataset="medquad+pubmedqa", split="test",
    description="perplexity on MedQuAD answers + PubMedQA abstracts",
))
