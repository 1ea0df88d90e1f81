"""Training data: instruction examples (SFT) and packed documents (continued pretraining).

SFT examples are built from the datasets with **the evaluation task's own prompt** for the same
dataset, so what the model learns is exactly what ``medslm eval`` asks:

- pubmedqa: ``Abstract: ...\\nQuestion: ...\\nAnswer:`` -> `` yes`` (+ ``\\n`` + the long answer)
- medmcqa / medqa: ``Question: ...\\nChoices:\\nA. ...\\nAnswer:`` -> `` B`` (+ ``\\nExplanation: ...``)
- medquad: ``Question: ...\\nAnswer:`` -> `` <answer>``
- medtext: ``<prompt>\\n`` -> ``<completion>``

Prompt and answer are tokenized the way the ``hf`` backend (and lm-evaluation-harness) scores them:
``ctx = enc(prompt)``, ``answer = enc(prompt + target)[len(ctx):]``, BOS for the Gemma family. The
loss covers the answer tokens and the closing EOS only (labels are -100 on the prompt).

A data spec is ``NAME[:SPLIT][,NAME[:SPLIT]...]``; ``SPLIT`` may carve a held-out part
(``pubmedqa:fit@50``, see :mod:`medslm.data.splits`).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from dataclasses import dataclass, field

from medslm.errors import ConfigError, DataError



def task_of() -> dict[str, str]:
    """dataset -> the evaluation task whose prompt (and default split) fine-tuning uses: every
    benchmark spec that says how to render a training target (``TaskSpec.train``)."""
    from medslm.tasks.spec import SPECS, discover

    discover()
    return {s.dataset: s.name for n, s in sorted(SPECS.items()) if s.train is not None and n == s.name}

# datasets whose text pretraining can read, and the field it reads
DOC_FIELDS = {"guidelines": "text", "medquad": "answer", "pubmedqa": "context", "mimic3": "text",
              "medtext": "answer"}


@dataclass
class Part:
    dataset: str
    split: str | None  # as written (None: the dataset's training split)
    resolved: str = ""
    examples: list = field(default_factory=list)


def parse_spec(spec: str, flag: str, allowed: dict) -> list[tuple[str, str | None]]:
    out = []
    for item in [s.strip() for s in str(spec).split(",") if s.strip()]:
        name, _, split = item.partition(":")
        if name not in allowed:
            raise ConfigError(f"{flag}={spec!r}: {name!r} cannot be used here; choose from "
                              f"{', '.join(sorted(allowed))} (optionally NAME:SPLIT, e.g. pubmedqa:fit@50)")
        out.append((name, split or None))
    if not out:
        raise ConfigError(f"{flag}: empty; name at least one dataset, e.g. pubmedqa:fit@50")
    return out


def load_parts(spec: str, flag: str = "data", allowed: dict | None = None, limit: int | dict[str, int] = 0,
               seed: int = 1234) -> list[Part]:
    """The examples of each ``NAME[:SPLIT]`` in ``spec``, with the split each resolved to;
    ``limit`` > 0 keeps a seeded sample of at most that many per part (in source order); a dict
    gives each dataset its own (datasets it does not name keep every example)."""
    import random

    from medslm.data import load_dataset
    from medslm.data.splits import parse_carve
    from medslm.tasks import get_task

    tasks = task_of()
    allowed = tasks if allowed is None else allowed
    items = parse_spec(spec, flag, allowed)
    if isinstance(limit, dict) and set(limit) - {n for n, _ in items}:
        raise ConfigError(f"limit names {sorted(set(limit) - {n for n, _ in items})}, which {flag}={spec!r} "
                          "does not read")
    parts = []
    for name, split in items:
        if name in tasks:
            task = get_task(tasks[name])
            if split is None:
                split = task.fewshot_split or "train"
                if parse_carve(split) is None and split not in _splits_of(name):
                    raise DataError(f"{flag}: {name} has no {split!r} split here; name one "
                                    f"({name}:SPLIT) or carve the evaluation split ({name}:fit@N)")
            ex = task.examples(split)
            parts.append(Part(name, split, task.resolved_split or split, ex))
        else:
            if parse_carve(split) is not None:
                raise ConfigError(f"{flag}: fit@N/dev@N carving needs a dataset with an evaluation "
                                  f"task ({', '.join(tasks)}); {name} has none")
            ex = [e for e in load_dataset(name, split=split) if split is not None or e.split != "test"]
            parts.append(Part(name, split, split or "all but test", ex))
        p = parts[-1]
        if not p.examples:
            raise DataError(f"{flag}: {name}:{p.resolved} has no usable examples")
        n_max = limit.get(name, 0) if isinstance(limit, dict) else limit
        if 0 < n_max < len(p.examples):
            total = len(p.examples)
            keep = set(random.Random(seed).sample(range(total), n_max))
            p.examples = [e for i, e in enumerate(p.examples) if i in keep]
            p.resolved += f"[{n_max} of {total}, seed {seed}]"
    return parts


def _splits_of(name: str) -> set[str]:
    from medslm.data import load_dataset

    return {e.split for e in load_dataset(name)}


def prompt_and_target(dataset: str, e, explanations: bool = True) -> tuple[str, str]:
    """(prompt, target) of a training example: as its benchmark's spec renders it."""
    return _task_for(dataset).train_pair(e, explanations)


def training_pairs(dataset: str, e, explanations: bool = True, chat: bool = False) -> list[tuple[str, str]]:
    """Every (prompt, target) an example trains: one, or one per entity type for NER; none for an
    unlabelled record. ``chat``: the prompt as the task asks in chat turns (its ``chat_prompt``)."""
    t = _task_for(dataset)
    if hasattr(t, "train_pairs"):
        return t.train_pairs(e)
    if getattr(e, "answer", None) is None:
        return []
    if chat and t.spec is not None and t.spec.chat_prompt:
        return [t.train_pair(e, explanations, chat=True)]
    return [t.train_pair(e, explanations)]


_TASKS: dict = {}


def _task_for(dataset: str):
    from medslm.tasks import get_task

    if dataset not in _TASKS:
        name = task_of().get(dataset)
        if name is None:
            raise ConfigError(f"no instruction format for dataset {dataset!r}")
        _TASKS[dataset] = get_task(name)
    return _TASKS[dataset]


def wants_bos(tokenizer, model_config) -> bool:
    """The backends' rule (:func:`medslm.backends.base.wants_bos`), so training sees what scoring sees."""
    from medslm.backends.base import wants_bos as rule

    return rule(getattr(model_config, "model_type", ""))


def encode_sft(tokenizer, prompt: str, target: str, *, add_bos: bool, seq_len: int,
               chat_template: bool = False, eos: bool = True) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated). Labels are -100 on the prompt; ``eos`` closes the answer."""
    if chat_template:  # one user turn, the answer as the model's turn (closed by its end-of-turn)
        from medslm.models.chat_template import end_of_turn_id, user_turn

        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("chat_template: true, but this model's tokenizer has no chat template")
        prompt = user_turn(tokenizer.chat_template, prompt, tokenizer.bos_token or "",
                           tokenizer.eos_token or "")
        target = target.lstrip()
        eot = end_of_turn_id(tokenizer)
    enc = lambda t: tokenizer(t, add_special_tokens=add_bos).input_ids  # noqa: E731
    n_sp = len(prompt) - len(prompt.rstrip())  # trailing spaces belong to the answer (lm-eval)
    if n_sp:
        prompt, target = prompt[:-n_sp], prompt[-n_sp:] + target
    ctx = enc(prompt)
    ans = enc(prompt + target)[len(ctx):]
    close = eot if chat_template and eot is not None else tokenizer.eos_token_id
    if eos and close is not None:
        ans = ans + [close]
    truncated = False
    if len(ctx) + len(ans) > seq_len:
        truncated = True
        ans = ans[:max(2, seq_len - len(ctx))]  # the explanation goes first
        ans = ans[:max(2, min(len(ans), seq_len - len(ctx), seq_len // 8))] if len(ctx) + len(ans) > seq_len else ans
        room = seq_len - len(ans)
        if len(ctx) > room:  # keep the start (BOS, "Abstract:") and the end (question, "Answer:")
            head = 1 if add_bos else 0
            ctx = ctx[:head] + ctx[len(ctx) - (room - head):]
    return ctx + ans, [-100] * len(ctx) + ans, truncated


def build_sft(parts: list[Part], tokenizer, model_config, *, seq_len: int, explanations: bool = True,
              chat_template: bool = False, eos: bool = True,
              repeat: dict[str, int] | None = None) -> tuple[list[dict], dict]:
    """Tokenized rows of every part; ``repeat`` {dataset: N} trains a dataset's rows N times per
    epoch (the mixture weight; the trainer shuffles the copies apart)."""
    repeat = repeat or {}
    add_bos = wants_bos(tokenizer, model_config)
    rows, cut_of, pairs_of, dataset_of_row = [], {}, {}, []
    for p in parts:
        for e in p.examples:
            for prompt, target in training_pairs(p.dataset, e, explanations, chat=chat_template):
                ids, labels, cut = encode_sft(tokenizer, prompt, target, add_bos=add_bos, seq_len=seq_len,
                                              chat_template=chat_template, eos=eos)
                cut_of[p.dataset] = cut_of.get(p.dataset, 0) + cut
                pairs_of[p.dataset] = pairs_of.get(p.dataset, 0) + 1
                n = repeat.get(p.dataset, 1)
                rows.extend({"input_ids": ids, "labels": labels} for _ in range(n))
                dataset_of_row += [p.dataset] * n
    if not rows:
        raise DataError("finetune: the data gave no labelled examples")
    for name, n in pairs_of.items():  # evaluation reads these prompts whole: say when training cut many
        cut = cut_of.get(name, 0)
        if cut / n > 0.1:
            print(f"medslm: warning: {cut} of {n} {name} examples are longer than seq_len {seq_len} and "
                  "were cut (the middle of the prompt) for training, while evaluation reads them whole; "
                  "raise seq_len to train on what is scored", file=sys.stderr)
    answers: dict[str, list[int]] = {}  # each dataset's answer tokens per row
    for d, r in zip(dataset_of_row, rows):
        answers.setdefault(d, []).append(sum(1 for x in r["labels"] if x != -100))
    stats = {"examples": len(rows), "truncated": sum(cut_of.values()), "truncated_by_dataset": cut_of,
             "tokens": sum(len(r["input_ids"]) for r in rows),
             "answer_tokens": sum(map(sum, answers.values())),
             "answer_tokens_by_dataset": {d: sum(v) for d, v in answers.items()},
             "median_answer_tokens": {d: statistics.median(v) for d, v in answers.items()},
             "dataset_of_row": dataset_of_row,
             "parts": [{"dataset": p.dataset, "split": p.resolved, "n": len(p.examples),
                        "ids_sha256": ids_digest(p.examples),
                        **({"repeat": repeat[p.dataset]} if repeat.get(p.dataset, 1) != 1 else {})}
                       for p in parts]}
    return rows, stats


def documents(parts: list[Part]) -> list[tuple[str, str]]:
    """(id, text) of each corpus record, from the field pretraining reads."""
    out = []
    for p in parts:
        attr = DOC_FIELDS[p.dataset]
        for e in p.examples:
            t = getattr(e, attr, None)
            if isinstance(t, str) and t.strip():
                out.append((e.id, t.strip()))
    if not out:
        raise DataError("pretrain: the corpus gave no text")
    return out


def pack(tokenizer, texts: list[str], seq_len: int, add_bos: bool) -> list[dict]:
    """Concatenate documents (each closed by EOS) and cut into blocks of ``seq_len`` tokens."""
    stream: list[int] = []
    for t in texts:
        stream += tokenizer(t, add_special_tokens=add_bos).input_ids
        if tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
    blocks = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    if not blocks and stream:
        blocks = [stream]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def ids_digest(examples) -> str:
    return hashlib.sha256(json.dumps(sorted(e.id for e in examples)).encode()).hexdigest()[:16]
