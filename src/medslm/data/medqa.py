"""MedQA-USMLE 4-option (Jin et al., 2021).

jind11/MedQA 4-option JSONL and the HF ``GBaker/MedQA-USMLE-4-options`` files share the fields
``question``, ``options`` {A..D}, ``answer_idx``, ``answer``, ``meta_info``. The split comes from the
file name (``train``, ``dev``/``validation``, ``test``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medslm.data.examples import MultipleChoice
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, iter_jsonl, select_split

LETTERS = "ABCD"


def _split_of(file: Path) -> str:
    n = file.stem.lower()
    for key, s in (("train", "train"), ("dev", "validation"), ("valid", "validation"), ("test", "test")):
        if key in n:
            return s
    return "train"


def load(root: Path, split: str | None, r: Reader) -> list[MultipleChoice]:
    out = []
    for f, s, where, rec in iter_jsonl("medqa", root, split, _split_of, r):
        q = r.field(f, where, rec, "question")
        opts = r.field(f, where, rec, "options", dict)
        idx = r.field(f, where, rec, "answer_idx")
        if q is None or opts is None or idx is None:
            continue
        if sorted(opts) != list(LETTERS):
            r.bad(f, where, "options", f"expected keys A-D, got {sorted(opts)}")
            continue
        if idx not in LETTERS:
            r.bad(f, where, "answer_idx", f"{idx!r} is not one of A-D")
            continue
        options = [opts[k] for k in LETTERS]
        if any(not isinstance(o, str) or not o.strip() for o in options):
            r.bad(f, where, "options", "an option is empty or not text")
            continue
        rid = "medqa-" + hashlib.sha1((q + "".join(options)).encode()).hexdigest()[:12]
        out.append(MultipleChoice(id=rid, split=s, question=q, options=options,
                                  answer=LETTERS.index(idx),
                                  meta={"meta_info": rec.get("meta_info"), "answer": rec.get("answer")}))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="medqa", kind="multiple_choice",
    description="MedQA-USMLE 4-option questions (jind11 JSONL / GBaker HF format)",
    license="MIT", upstream="HF GBaker/MedQA-USMLE-4-options", load=load,
    splits=("train", "validation", "test"), hf_repo="GBaker/MedQA-USMLE-4-options",
    present=lambda p: bool(find_files(p, ["*.jsonl"])) if p.is_dir() else False,
    records="12,723 (1,273 test)",
)
