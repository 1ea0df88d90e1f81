"""Recall@k of a MedQuAD question's own document, and retrieval latency, per ranker."""

from __future__ import annotations

import random
import time
from typing import Any


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

def _question_only(e) -> str:
    return f"Question: {e.question}\nAnswer:"


def rag_prompt(snippets: list[str], prompt: str) -> str:
    src = "".join(f"[{i}] {s}\n" for i, s in enumerate(snippets, 1))
    return f"Sources:\n{src}\n{prompt}"


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: ``b`` items right only without, ``c`` right only with retrieval."""
    from math import comb

    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    p = 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, p)


def paired_ci(a: list[int], b: list[int], n_boot: int = 2000, seed: int = 1234) -> tuple[float, float]:
    """95% percentile-bootstrap CI of mean(b) - mean(a), resampling items (paired)."""
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(b[i] - a[i] for i in idx) / n)
    diffs.sort()
    return diffs[int(0.025 * n_boot)], diffs[int(0.975 * n_boot) - 1]


def rag_accuracy(backend: Any, task_name: str, index_path: str, *, k: int = 3, split: str | None = None,
                 limit: int | None = None, seed: int = 1234, snippet_chars: int = 600) -> dict[str, Any]:
    """Accuracy of ``task_name`` without and with retrieved snippets, paired per item.

    PubMedQA is asked from the question alone (no abstract) in both arms, and the item's own
    abstract is excluded from retrieval. Other tasks keep their prompt and get snippets prepended.
    """
    from medslm.requests import LoglikelihoodRequest
    from medslm.rag.index import Index
    from medslm.tasks import get_task

    task = get_task(task_name)
    exs = task.examples(split, limit, seed)
    ix = Index(index_path)
    from tqdm.auto import tqdm

    arms: dict[str, list[int]] = {"without": [], "with": []}
    for e in tqdm(exs, desc=f"{task_name}: with and without retrieval", unit="item", leave=False):
        base = _question_only(e) if task_name == "pubmedqa" else task.text(e)
        query = e.question if task_name == "pubmedqa" else f"{e.question} {' '.join(e.options)}"
        own = f"pubmed-{str(e.id).split('-')[-1]}" if task_name == "pubmedqa" else None
        hits = [h for h in ix.search(query, k=k + 1) if h.doc_id != own][:k]
        with_rag = rag_prompt([h.snippet[:snippet_chars] for h in hits], base)
        labels = task.labels(e)
        for arm, prompt in (("without", base), ("with", with_rag)):
            lls = backend.loglikelihood([LoglikelihoodRequest(prompt, " " + c) for c in labels])
            pred = max(range(len(labels)), key=lambda i: lls[i][0])
            arms[arm].append(int(pred == e.answer))
    a, b = arms["without"], arms["with"]
    only_without = sum(1 for x, y in zip(a, b) if x and not y)
    only_with = sum(1 for x, y in zip(a, b) if y and not x)
    lo, hi = paired_ci(a, b, seed=seed)
    diff = (sum(b) - sum(a)) / len(a)
    return {"task": task_name, "n": len(a), "k": k, "index": str(index_path),
            "acc_without": sum(a) / len(a), "acc_with": sum(b) / len(b), "diff": diff, "diff_ci95": [lo, hi],
            "mcnemar_p": mcnemar_p(only_without, only_with), "only_without": only_without, "only_with": only_with,
            "gain_claimed": lo > 0, "per_item": {"without": a, "with": b}}
