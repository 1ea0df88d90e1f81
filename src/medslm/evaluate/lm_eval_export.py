"""medslm's benchmarks as lm-evaluation-harness tasks (``medslm eval --tasks ls --export-lm-eval DIR``).

For each task, medslm renders the exact requests it sends a model (the prompt, the choices, the
split and seed it resolved) into JSONL that lm-eval reads with ``dataset_path: json``, and writes
a task YAML over it, so lm-eval runs medslm's benchmark definitions, the ones lm-eval lacks
included (MedQuAD, MedText, MeQSum, ChemProt as multiple choice, ...):

- multiple choice (``output_type: multiple_choice``): ``doc_to_text: prompt`` (the context as
  medslm builds it), ``doc_to_choice: choices`` (each continuation without the one leading space
  lm-eval's ``target_delimiter`` adds back), ``doc_to_target: gold``; metrics acc and acc_norm;
- open generation (``output_type: generate_until``): the prompt, medslm's stop strings and token
  budget, greedy; ROUGE-L (rouge-score, stemmed, as medslm scores it) through a
  ``process_results`` function in the folder's ``utils.py``.

Tasks that are neither (perplexity, rubric and safety judging, NER's several requests per
sentence, classification with scores) are listed as not exported, with the reason. Each JSONL
row keeps medslm's example id, and the YAML's ``metadata`` the prompt version and split, so an
lm-eval number traces back to the medslm result it should equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medslm.requests import GenerateRequest, LoglikelihoodRequest

UTILS = '''"""Written by medslm: ROUGE-L F1 as medslm scores open generation (rouge-score, stemmed)."""


def process_results(doc, results):
    from rouge_score import rouge_scorer

    out = results[0].strip()
    score = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(doc["answer"], out)["rougeL"]
    return {"rougeL": score.fmeasure}
'''


def _doc(task, e) -> tuple[str, dict[str, Any]] | None:
    reqs = task.requests(e)
    if reqs and all(isinstance(r, LoglikelihoodRequest) for r in reqs) and len({r.context for r in reqs}) == 1 \
            and all(r.continuation.startswith(" ") for r in reqs) and isinstance(getattr(e, "answer", None), int):
        return "multiple_choice", {"id": e.id, "prompt": reqs[0].context,
                                   "choices": [r.continuation[1:] for r in reqs], "gold": e.answer}
    if len(reqs) == 1 and isinstance(reqs[0], GenerateRequest) and isinstance(getattr(e, "answer", None), str):
        r = reqs[0]
        return "generate_until", {"id": e.id, "prompt": r.context, "answer": e.answer,
                                  "until": list(r.until), "max_tokens": r.max_tokens}
    return None


def _yaml(name: str, kind: str, data: Path, split: str, version: str, docs: list[dict]) -> dict[str, Any]:
    y: dict[str, Any] = {
        "task": f"medslm_{name}", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}}, "test_split": "test",
        "output_type": kind, "doc_to_text": "prompt",
        "metadata": {"version": float(version) if version.replace(".", "", 1).isdigit() else 1.0,
                     "medslm_task": name, "medslm_split": split},
    }
    if kind == "multiple_choice":
        y |= {"doc_to_choice": "choices", "doc_to_target": "gold",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                              {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    else:
        until, budget = docs[0]["until"], docs[0]["max_tokens"]
        y |= {"doc_to_target": "answer", "process_results": "!function utils.process_results",
              "generation_kwargs": {"until": until or ["\n\n\n"], "max_gen_toks": budget, "do_sample": False,
                                    "temperature": 0.0},
              "metric_list": [{"metric": "rougeL", "aggregation": "mean", "higher_is_better": True}]}
    return y


def export(names: list[str], out: str | Path, *, split: dict | str | None = None, limit: dict | int | None = None,
           seed: int = 1234, log=print) -> dict[str, str]:
    """Write one folder per exportable task under ``out``; returns {task: yaml path or reason skipped}."""
    import yaml

    from medslm.errors import MedslmError
    from medslm.outputs import replace_file
    from medslm.tasks import get_task

    out = Path(out)
    done: dict[str, str] = {}
    for name in names:
        task = get_task(name)
        sp = split.get(name) if isinstance(split, dict) else split
        lim = limit.get(name) if isinstance(limit, dict) else limit
        try:
            examples = task.examples(sp, lim, seed)
        except MedslmError as e:
            done[name] = f"skipped: its data cannot be read here ({str(e).splitlines()[0].split(';')[0][:160]})"
            continue
        task.prepare(examples, fewshot=0, seed=seed)
        rows = [_doc(task, e) for e in examples]
        kinds = {r[0] for r in rows if r}
        if not rows or None in rows or len(kinds) != 1:
            done[name] = (f"skipped: a {task.family} task (its requests are not one multiple-choice or one "
                          "generation request per example)")
            continue
        kind = kinds.pop()
        docs = [r[1] for r in rows]
        d = out / name
        data = d / "test.jsonl"
        replace_file(data, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in docs))
        y = _yaml(name, kind, data, str(task.resolved_split or sp or task.split), str(task.prompt_version), docs)
        text = yaml.safe_dump(y, sort_keys=False, allow_unicode=True)
        text = text.replace("'!function utils.process_results'", "!function utils.process_results")
        if kind == "generate_until":
            replace_file(d / "utils.py", UTILS)
        replace_file(d / f"{name}.yaml", text)
        done[name] = str(d / f"{name}.yaml")
        log(f"  {name}: {len(docs)} examples ({kind}) -> {d / f'{name}.yaml'}")
    return done
