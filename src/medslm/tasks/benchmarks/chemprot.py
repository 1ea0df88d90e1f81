"""ChemProt relation classification as multiple choice over the five CPR classes (dev split)."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="chemprot", family="multiple_choice", dataset="chemprot", split="dev",
    description="ChemProt chemical-protein relation, 5 CPR classes: accuracy (= micro-F1 here), macro-F1",
    prompt=("Sentence: {question}\nThe chemical is marked << >> and the protein [[ ]]. The chemical is "
            "the protein's (upregulator, inhibitor, agonist, antagonist or substrate):\nAnswer:"),
    fewshot_split="train", metrics=("macro_f1",), train={"explanation": (), "prefix": ""},
    group="relation extraction",
))
