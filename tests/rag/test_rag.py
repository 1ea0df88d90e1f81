"""Retrieval: chunking, BM25 ranking, fusion, citations in the server's replies."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bm25s")

from medslm.rag.cite import check_citations, cited  # noqa: E402
from medslm.rag.index import Doc, Index, build, chunks  # noqa: E402

DOCS = [
    Doc("d1", "What is scurvy?", "https://example.org/scurvy", "Scurvy is caused by a lack of vitamin C. " * 40, "t"),
    Doc("d2", "What is gout?", "https://example.org/gout", "Gout is arthritis caused by uric acid crystals.", "t"),
    Doc("d3", "Treatment of hypertension", "https://example.org/htn",
        "Hypertension is treated with ACE inhibitors, thiazide diuretics and lifestyle change.", "t"),
]


def test_chunks_are_at_most_1000_chars_overlap_and_never_cut_words():
    text = " ".join(f"word{i}" for i in range(800))
    cs = chunks(text)
    assert len(cs) > 3 and all(len(c) <= 1000 for c in cs)
    words = set(text.split())
    assert all(w in words for c in cs for w in c.split())
    for a, b in zip(cs, cs[1:]):  # consecutive chunks share about 200 characters
        tail = a[-150:].split()[1:]
        assert " ".join(tail[:3]) in b
    assert " ".join(dict.fromkeys(w for c in cs for w in c.split())) == text


def test_bm25_finds_the_right_document_and_records_its_build(tmp_path):
    ix = build(DOCS, tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["documents"] == 3 and meta["chunks"] > 3 and meta["chunk_chars"] == 1000
    hits = Index(tmp_path / "ix").search("what causes scurvy", k=2)
    assert hits[0].doc_id == "d1" and hits[0].url == "https://example.org/scurvy"
    assert len({h.doc_id for h in hits}) == len(hits)  # one chunk per document
    assert ix.search("zzzz qqqq", k=3) == []
    with pytest.raises(Exception, match="--overwrite"):
        build(DOCS, tmp_path / "ix")


def test_citation_markers_that_point_nowhere_are_removed_and_counted():
    text, bad = check_citations("Vitamin C [1]. Uric acid [2, 7]. Nothing [9] here [0].", 2)
    assert bad == 3 and cited(text) == {1, 2} and "[9]" not in text and "[2]" in text


def test_augment_respects_the_token_budget(tmp_path):
    ix = build(DOCS, tmp_path / "ix")
    msgs, cites = ix.augment([{"role": "user", "content": "scurvy gout hypertension"}], k=3, budget_tokens=300)
    assert msgs[0]["role"] == "system" and "[1]" in msgs[0]["content"]
    assert len(msgs[0]["content"]) // 4 <= 300 + 60
    assert [c["id"] for c in cites] == list(range(1, len(cites) + 1))


def test_the_server_returns_citations_that_resolve(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from helpers.serving import ScriptedRuntime, make_app

    app = make_app(ScriptedRuntime(script="Vitamin C deficiency [1], see also [5].", n_ctx=4096))
    app.state.medslm.rag = Index(build(DOCS, tmp_path / "ix").path)
    c = TestClient(app)
    body = {"messages": [{"role": "user", "content": "What causes scurvy?"}], "rag": {"k": 2},
            "max_tokens": 60, "temperature": 0}
    r = c.post("/v1/chat/completions", json=body).json()
    assert r["citations"][0]["url"] == "https://example.org/scurvy"
    text = r["choices"][0]["message"]["content"]
    assert cited(text) <= {c["id"] for c in r["citations"]} and r["invalid_citations_removed"] == 1
    with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        first = json.loads(next(ln for ln in s.iter_lines() if ln.startswith("data: "))[6:])
    assert first["citations"] == r["citations"]
    app2 = make_app()
    r = TestClient(app2).post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "rag"


def test_medquad_bm25_recall_and_latency(data_dir, tmp_path):
    from medslm.rag.evaluate import recall_at_k
    from medslm.rag.index import medquad_docs

    ix = build(medquad_docs(), tmp_path / "mq")
    assert ix.stats()["build_seconds"] <= 60 and ix.stats()["documents"] > 10_000
    res = recall_at_k(str(tmp_path / "mq"), n=200, k=5)
    assert res["bm25"]["recall"] >= 0.7 and res["bm25"]["p95_ms"] <= 50


def test_mcnemar_and_paired_ci():
    from medslm.rag.evaluate import mcnemar_p, paired_ci

    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_p(5, 5) == 1.0 and mcnemar_p(0, 0) == 1.0
    a, b = [0] * 50 + [1] * 50, [1] * 50 + [1] * 50
    lo, hi = paired_ci(a, b)
    assert 0 < lo < 0.5 < hi <= 0.7
    lo, hi = paired_ci(a, a)
    assert lo == hi == 0


def test_rag_eval_excludes_the_items_own_abstract(data_dir, tmp_path):
    from medslm.rag.evaluate import rag_accuracy
    from medslm.rag.index import pubmed_docs

    build(pubmed_docs(), tmp_path / "pm")
    prompts = []

    from medslm.backends.dummy import DummyBackend

    class Recorder(DummyBackend):
        def loglikelihood(self, reqs):
            prompts.extend(r.context for r in reqs)
            return [(-len(r.continuation), True) for r in reqs]  # always the shortest label ("no")

    from medslm.tasks import get_task

    exs = get_task("pubmedqa").examples(None, 8, 1234)
    r = rag_accuracy(Recorder(), "pubmedqa", str(tmp_path / "pm"), k=3, limit=8)
    assert r["n"] == 8 and r["acc_with"] == r["acc_without"] and not r["gain_claimed"]
    for arm, res in r["results"].items():  # each arm is a whole Result, as the runner writes it
        assert res["task"]["name"] == ("pubmedqa+rag3" if arm == "with" else "pubmedqa+norag")
        assert res["task"]["n"] == 8 and res["metrics"]["acc"]["value"] == r[f"acc_{arm}"]
        assert res["metrics"]["acc"]["ci95"] is not None and len(res["examples"]) == 8
    with_prompts = [p for p in prompts if p.startswith("Sources:")]
    assert len(with_prompts) == 8 * 3 and all("Abstract:" not in p for p in prompts)
    for e in exs:  # the item's own abstract never comes back as a source
        own = " ".join(e.context.split())[:200]
        mine = [p for p in with_prompts if e.question in p]
        assert mine and not any(own in " ".join(p.split()) for p in mine)
