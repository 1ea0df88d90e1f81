"""Recall@k of a MedQuAD question's own document, and retrieval latency, per ranker."""

from __future__ import annotations

import random
import time
from typing import Any

from medslm.evaluate.paired import mcnemar_p, paired_ci


def recall_at_k(index_path: str, n: int = 500, k: int = 5, seed: int = 1234,
                modes: list[str] = ("bm25",)) -> dict[str, Any]:
    from medslm.rag.index import Index

    ix = Index(index_path)
    qs: dict[str, str] = {}
    for r in ix.rows:
        if r["source"] == "medquad" and r["doc_id"] not in qs:
            qs[r["doc_id"]] = r["title"]
    items = sorted(qs.items())
    random.Random(seed).shuffle(items)
    items = items[:n]
    out: dict[str, Any] = {"index": str(index_path), "questions": len(items), "k": k, "seed": seed}
    for mode in modes:
        hit, lat = 0, []
        for doc_id, q in items:
            t = time.perf_counter()
            hits = ix.search(q, k=k, mode=mode)
            lat.append(time.perf_counter() - t)
            hit += any(h.doc_id == doc_id for h in hits)
        lat.sort()
        out[mode] = {"recall": round(hit / max(1, len(items)), 4),
                     "p50_ms": round(1000 * lat[len(lat) // 2], 2),
                     "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 2)}
    return out


# ------------------------------------------------------------------ accuracy with and without retrieval

def rag_prompt(snippets: list[str], prompt: str) -> str:
    src = "".join(f"[{i}] {s}\n" for i, s in enumerate(snippets, 1))
    return f"Sources:\n{src}\n{prompt}"


def rag_tasks() -> list[str]:
    """The tasks whose spec says how to ask them with retrieval (multiple choice only)."""
    from medslm.tasks.spec import SPECS, discover

    return [n for n in discover() if SPECS[n].rag is not None and n == SPECS[n].name
            and SPECS[n].family == "multiple_choice"]


def retrieval_arm(base, index, k: int, with_rag: bool, snippet_chars: int = 600):
    """One arm of the retrieval comparison as a task the runner evaluates (request cache, Result
    JSON, CIs): the multiple-choice task ``base``'s examples and scoring, asked with its spec's
    retrieval prompt, with the top-``k`` snippets of ``index`` prepended (``with_rag``) or not."""
    import copy

    task = copy.copy(base)  # the base's examples, labels and scoring; our prompt
    rag = base.spec.rag
    arm = f"rag{k}" if with_rag else "norag"
    task.name = f"{base.name}+{arm}"
    task.prompt_version = f"{base.prompt_version}+{arm}-v1"
    ask = rag["prompt"] if "prompt" in rag else base.text

    def requests(e):
        prompt = ask(e)
        if with_rag:
            query = e.question if rag.get("query") == "question" else f"{e.question} {' '.join(e.options)}"
            own = rag["own_doc"](e) if "own_doc" in rag else None
            hits = [h for h in index.search(query, k=k + 1) if h.doc_id != own][:k]
            prompt = rag_prompt([h.snippet[:snippet_chars] for h in hits], prompt)
        from medslm.requests import LoglikelihoodRequest

        return [LoglikelihoodRequest(prompt, " " + c) for c in base.labels(e)]

    task.requests = requests
    task.prepare = lambda *a, **kw: None  # zero-shot in both arms
    task.describe = lambda: {**type(base).describe(task), "retrieval": {"index": str(index.path), "k": k}
                             if with_rag else None}
    return task


def rag_accuracy(backend: Any, task_name: str, index_path: str, *, k: int = 3, split: str | None = None,
                 limit: int | None = None, seed: int = 1234, snippet_chars: int = 600, cache=None,
                 bootstrap: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Accuracy of ``task_name`` without and with retrieved snippets, paired per item; each arm is
    evaluated by the runner (request cache, Result JSON with CIs), returned under ``results``.

    PubMedQA is asked from the question alone (no abstract) in both arms, and the item's own
    abstract is excluded from retrieval (its spec's ``rag``). Other tasks keep their prompt and get
    snippets prepended.
    """
    from medslm.errors import MedslmError
    from medslm.evaluate.runner import evaluate_task
    from medslm.rag.index import Index
    from medslm.tasks import get_task

    task = get_task(task_name)
    if task.spec is None or task.spec.rag is None or task.family != "multiple_choice":
        raise MedslmError(f"--rag: {task_name} is not a multiple-choice task with a retrieval setup (its "
                          "spec's `rag`); " + ", ".join(rag_tasks()) + " have one")
    ix = Index(index_path)
    results = {}
    for arm, with_rag in (("without", False), ("with", True)):
        t = retrieval_arm(get_task(task_name), ix, k, with_rag, snippet_chars)
        results[arm] = evaluate_task(backend, t, split=split, limit=limit, seed=seed, cache=cache,
                                     bootstrap=bootstrap, progress=progress)
    a = [int(r["acc"]) for r in results["without"]["examples"]]
    b = [int(r["acc"]) for r in results["with"]["examples"]]
    only_without = sum(1 for x, y in zip(a, b) if x and not y)
    only_with = sum(1 for x, y in zip(a, b) if y and not x)
    lo, hi = paired_ci(a, b, seed=seed)
    diff = (sum(b) - sum(a)) / len(a)
    return {"task": task_name, "n": len(a), "k": k, "index": str(index_path),
            "acc_without": sum(a) / len(a), "acc_with": sum(b) / len(b), "diff": diff, "diff_ci95": [lo, hi],
            "mcnemar_p": mcnemar_p(only_without, only_with), "only_without": only_without, "only_with": only_with,
            "gain_claimed": lo > 0, "per_item": {"without": a, "with": b}, "results": results}
