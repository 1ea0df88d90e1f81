"""Meditron clinical guidelines (HF ``epfl-llm/guidelines``): one Document per guideline.

JSONL with ``id``, ``source``, ``title``, ``clean_text`` (the text used), ``raw_text``, ``url``,
``overview``. Split: ``test`` for a fixed 5% (hash of id), for held-out perplexity.
"""

from __future__ import annotations

from pathlib import Path

from medslm.data.examples import Document
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, iter_jsonl, select_split, split_of


def load(root: Path, split: str | None, r: Reader) -> list[Document]:
    out = []
    for f, _, where, rec in iter_jsonl("guidelines", root, None, lambda f: "all", r):
        text = r.field(f, where, rec, "clean_text")
        if text is None:
            continue
        gid = str(rec.get("id") or f"{f.stem}-{where[5:]}")
        out.append(Document(id=f"guideline-{gid}", split=split_of(gid, 0.05), text=text,
                            title=rec.get("title") or "", source=rec.get("source") or "",
                            meta={"url": rec.get("url"), "overview": rec.get("overview")}))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="guidelines", kind="document",
    description="Meditron clinical practice guidelines (open subset), for pretraining and retrieval",
    license="per source (see each record's source; open subset of epfl-llm/guidelines)",
    upstream="HF epfl-llm/guidelines", load=load, splits=("train", "test"),
    hf_repo="epfl-llm/guidelines", hf_patterns=("*.jsonl",),
    present=lambda p: p.is_dir() and bool(find_files(p, ["*.jsonl"])), records="~37k (open subset)",
)
