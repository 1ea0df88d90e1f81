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
