"""Generative NER on NCBI-disease (diseases) and BC5CDR (chemicals and diseases), on ``devel``."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="ncbi_disease", family="ner", dataset="ncbi_disease", split="devel",
    description="NCBI-disease mentions, entity-level exact-match F1 (devel)",
    fewshot_split="train", train={}, options={"types": ("Disease",)},
))
register_task(TaskSpec(
    name="bc5cdr", family="ner", dataset="bc5cdr", split="devel",
    description="BC5CDR chemical + disease mentions, entity-level exact-match F1 per type (devel)",
    fewshot_split="train", train={}, options={"types": ("Chemical", "Disease")},
))
