"""MedQuAD (Ben Abacha & Demner-Fushman, 2019): consumer-health QA from NIH websites.

Reads the repository's XML tree (``<Document id source url>`` ... ``<QAPair><Question qid qtype>``
``<Answer>``, and the lower-case ``<doc><qaPairs><pair><question><answer>`` variant), or the HF
keivalya CSV (``question``, ``answer``, ``source``, ``focus_area``). Some upstream answers are empty
(copyright-stripped MedlinePlus folders, five GARD pairs): they are kept with ``answer=''`` and
``meta['answered']=False`` so counts match upstream; tasks use the answered ones. Split: ``test``
for a fixed 10% of documents (hash of the file path), ``train`` for the rest.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from medslm.data.examples import OpenQA
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split, split_of
from medslm.errors import DataError


def _text(el) -> str:
    return "".join(el.itertext()).strip() if el is not None else ""


def _find(el, *names):
    for n in names:
        x = el.find(n)
        if x is not None:
            return x
    return None


def _from_xml(f: Path, root: Path, r: Reader) -> list[OpenQA]:
    rel = f.relative_to(root).as_posix() if f != root else f.name
    try:
        doc = ET.fromstring(r.text(f))
    except ET.ParseError as e:
        r.bad(f, "document", None, f"invalid XML ({e})")
        return []
    source = doc.get("source") or doc.get("corpus") or f.parent.name
    url = doc.get("url", "")
    focus = _text(_find(doc, "Focus", "doctitle-focus"))
    pairs = doc.findall(".//QAPair") + doc.findall(".//pair")
    split = split_of(rel)
    out = []
    for k, p in enumerate(pairs, 1):
        q = _find(p, "Question", "question")
        a = _find(p, "Answer", "answer")
        qid = (q.get("qid") if q is not None else None) or f"{doc.get('id', f.stem)}-{k}"
        if q is None or not _text(q):
            r.bad(f, qid, "Question", "missing or empty")
            continue
        ans = _text(a)
        out.append(OpenQA(id=f"medquad-{f.parent.name.split('_')[0]}-{f.stem}-{k}", split=split,
                          question=_text(q), answer=ans, source=source,
                          meta={"url": url, "focus": focus, "qtype": q.get("qtype", ""),
                                "folder": f.parent.name, "answered": bool(ans), "file": rel,
                                "qid": qid}))
    return out


def load(root: Path, split: str | None, r: Reader) -> list[OpenQA]:
    root = Path(root)
    xmls = find_files(root, ["*.xml"])
    out: list[OpenQA] = []
    for f in xmls:
        out += _from_xml(f, root if root.is_dir() else f.parent, r)
    for f in find_files(root, ["*.csv"]):
        for line, rec in r.csv(f, ["question", "answer"]):
            q = r.field(f, f"line {line}", rec, "question")
            if q is None:
                continue
            a = rec.get("answer", "").strip()
            key = f"{f.name}:{line}"
            out.append(OpenQA(id=f"medquad-csv-{line}", split=split_of(key), question=q, answer=a,
                              source=rec.get("source", ""),
                              meta={"focus": rec.get("focus_area", ""), "answered": bool(a)}))
    if not xmls and not out:
        raise DataError(f"medquad: no XML files or CSV under {root}")
    return select_split(out, split, SPEC, root)


SPEC = DatasetSpec(
    name="medquad", kind="open_qa",
    description="MedQuAD: consumer-health question/answer pairs from 12 NIH sources",
    license="CC BY 4.0", upstream="github abachaa/MedQuAD", load=load, splits=("train", "test"),
    present=lambda p: p.is_dir() and (any(p.rglob("*.xml")) or any(p.glob("*.csv"))),
    urls={"medquad.zip": "https://github.com/abachaa/MedQuAD/archive/refs/heads/master.zip"},
    records="47,457 pairs (16,428 answered upstream)",
)
