"""PubMedQA (Jin et al., 2019): yes/no/maybe questions over PubMed abstracts.

Files (github pubmedqa/pubmedqa ``data/``): ``ori_pqal.json`` (PQA-L, PMID -> record),
``test_ground_truth.json`` (the official 500 test PMIDs -> label), and when present
``ori_pqaa.json`` (PQA-A, artificial labels) and ``ori_pqau.json`` (PQA-U, unlabelled).
Splits: ``test`` = PQA-L records whose PMID is in test_ground_truth.json, ``train`` = the others,
``pqa_a`` and ``pqa_u``.
"""

from __future__ import annotations

from pathlib import Path

from medslm.data.examples import MultipleChoice
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, select_split
from medslm.errors import DataError

OPTIONS = ["yes", "no", "maybe"]
BASE = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/"


def _records(file: Path, r: Reader, split: str, labelled: bool, truth: dict) -> list[MultipleChoice]:
    data = r.json(file)
    if not isinstance(data, dict):
        raise DataError(f"pubmedqa: {file}: expected a JSON object mapping PMID -> record, got "
                        f"{type(data).__name__}")
    out = []
    for pmid, rec in data.items():
        if not isinstance(rec, dict):
            r.bad(file, pmid, None, "record is not an object")
            continue
        q = r.field(file, pmid, rec, "QUESTION")
        ctx = r.field(file, pmid, rec, "CONTEXTS", list)
        if q is None or ctx is None:
            continue
        if not all(isinstance(c, str) for c in ctx):
            r.bad(file, pmid, "CONTEXTS", "expected a list of strings")
            continue
        answer = None
        if labelled:
            dec = r.field(file, pmid, rec, "final_decision")
            if dec is None:
                continue
            if dec not in OPTIONS:
                r.bad(file, pmid, "final_decision", f"{dec!r} is not one of yes/no/maybe")
                continue
            answer = OPTIONS.index(dec)
        s = ("test" if pmid in truth else "train") if split == "pqa_l" else split
        meta = {k.lower(): v for k, v in rec.items() if k not in ("QUESTION", "CONTEXTS")}
        meta["pmid"] = pmid
        out.append(MultipleChoice(id=f"pubmedqa-{pmid}", split=s, question=q, options=list(OPTIONS),
                                  answer=answer, context="\n".join(ctx), meta=meta))
    return out


def load(root: Path, split: str | None, r: Reader) -> list[MultipleChoice]:
    root = Path(root)
    base = root.parent if root.is_file() else root
    pqal = root if root.is_file() else base / "ori_pqal.json"
    if not pqal.is_file():
        raise DataError(f"pubmedqa: {pqal} not found (the PQA-L file ori_pqal.json)")
    truth_file = base / "test_ground_truth.json"
    truth = r.json(truth_file) if truth_file.is_file() else {}
    if split == "test" and not truth:
        raise DataError(f"pubmedqa: split 'test' needs {truth_file} (the official test PMIDs, from "
                        "github pubmedqa/pubmedqa data/); without it every record is 'train'")
    out = _records(pqal, r, "pqa_l", True, truth)
    for name, s, labelled in (("ori_pqaa.json", "pqa_a", True), ("ori_pqau.json", "pqa_u", False)):
        if (base / name).is_file() and split in (None, s):
            out += _records(base / name, r, s, labelled, {})
    return select_split(out, split, SPEC, root)


SPEC = DatasetSpec(
    name="pubmedqa", kind="multiple_choice",
    description="PubMedQA PQA-L: yes/no/maybe questions over abstracts (official 500-PMID test split)",
    license="MIT", upstream="github pubmedqa/pubmedqa data/", load=load,
    splits=("train", "test", "pqa_a", "pqa_u"),
    present=lambda p: (p / "ori_pqal.json").is_file(),
    urls={"ori_pqal.json": BASE + "ori_pqal.json", "test_ground_truth.json": BASE + "test_ground_truth.json"},
    records="1,000 PQA-L (500 test)",
)
