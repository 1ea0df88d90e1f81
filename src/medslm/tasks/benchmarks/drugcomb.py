"""Drug-pair synergy (score > 30, DeepSynergy's threshold), asked CancerGPT-style as yes/no."""

from medslm.tasks.spec import TaskSpec, register_task

register_task(TaskSpec(
    name="drugcomb_synergy", family="classification", dataset="drugcomb", split="test",
    description="drug-pair synergy (score > 30), CancerGPT-style", fewshot_split="train",
    options={"question": "Is this drug combination synergistic?"},
))
