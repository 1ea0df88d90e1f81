"""Benchmarks as data: a :class:`TaskSpec` names the dataset, split, prompt template and version,
choices, few-shot split, metrics and how training and retrieval use the benchmark; the task family
(multiple choice, open generation, rubric, classification, perplexity) supplies the mechanics.

A new benchmark is its dataset module (``medslm/data/<name>.py``) plus one spec module in
``medslm/tasks/benchmarks/`` calling :func:`register_task`; nothing else changes. Spec modules hold
no heavy imports: listing tasks imports them all.

Prompt templates are ``str.format`` strings over the example's fields, with ``{options}`` the
choices as ``"A. first\\nB. second\\n..."``; a template may also be a function of the example.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

LETTERS = "ABCD"
FAMILIES = {
    "multiple_choice": "medslm.tasks.multiple_choice:MultipleChoiceTask",
    "open_generation": "medslm.tasks.generation:OpenGeneration",
    "rubric": "medslm.tasks.generation:Amega",
    "safety": "medslm.tasks.safety:Safety",
    "ner": "medslm.tasks.ner:NERTask",
    "classification": "medslm.tasks.classification:YesNoTask",
    "perplexity": "medslm.tasks.perplexity:MedPPL",
}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str
    dataset: str
    split: str
    description: str
    prompt_version: str = "1"
    prompt: str | Callable[[Any], str] | None = None
    # the prompt as a person types it in a chat turn (e.g. the bare question), used when the task is
    # asked in chat form (``--chat-template`` on/auto with a chat model, ``finetune --chat-template``);
    # None: the chat turn carries ``prompt``
    chat_prompt: str | Callable[[Any], str] | None = None
    choices: str | None = None  # "ABCD": letter labels; None: the example's own options
    fewshot_split: str | None = None
    subject: str | None = None  # MMLU: the subject this task keeps
    metrics: tuple[str, ...] = ()  # metrics besides the family's own
    cot: bool = False  # also register NAME_cot (generate, then parse "Answer: X")
    # how fine-tuning renders a target: {"explanation": (fields...), "prefix": "Explanation: ", "space": True}
    train: dict[str, Any] | None = None
    # how retrieval-augmented evaluation asks: {"query": "question"|"question+options",
    # "prompt": callable(example) -> str, "own_doc": callable(example) -> doc id to exclude}
    rag: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # family-specific (question, qa_prompt, ...)
    group: str = ""  # the survey's NLP task family, when the mechanics' family does not say it


# the survey's task families (Garg et al. 2025), in the report's order; a spec's own `group` wins
GROUPS = ("question answering", "open question answering", "named-entity recognition", "relation extraction",
          "summarization", "safety", "clinical rubric", "classification", "language modelling")
GROUP_OF_FAMILY = {"multiple_choice": "question answering", "open_generation": "open question answering",
                   "ner": "named-entity recognition", "safety": "safety", "rubric": "clinical rubric",
                   "classification": "classification", "perplexity": "language modelling"}


def group_of(spec: TaskSpec) -> str:
    return spec.group or GROUP_OF_FAMILY.get(spec.family, spec.family)


SPECS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.family not in FAMILIES:
        raise ValueError(f"task {spec.name}: family {spec.family!r} is not one of {', '.join(FAMILIES)}")
    for name in (spec.name, spec.name + "_cot") if spec.cot else (spec.name,):
        if name in SPECS:
            raise ValueError(f"duplicate task name {name!r}")
        SPECS[name] = spec
    return spec


def discover() -> list[str]:
    """Every registered task name (importing each spec module of ``benchmarks/`` once)."""
    if not SPECS:
        for m in pkgutil.iter_modules([str(Path(__file__).with_name("benchmarks"))]):
            importlib.import_module(f"medslm.tasks.benchmarks.{m.name}")
    return sorted(SPECS)


def spec_of(name: str) -> TaskSpec:
    discover()
    return SPECS[name]


def build(name: str, **options: Any):
    """The task ``name``: its spec's family class, built from the spec."""
    spec = spec_of(name)
    module, attr = FAMILIES[spec.family].split(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls.from_spec(name, spec, **options)


def render(template: str | Callable[[Any], str], e: Any) -> str:
    if callable(template):
        return template(e)
    fields = {k: v for k, v in vars(e).items() if isinstance(v, str)}
    opts = getattr(e, "options", None) or []
    fields["options"] = "".join(f"{chr(65 + i)}. {o}\n" for i, o in enumerate(opts))  # A., B., ...
    return template.format(**fields)
