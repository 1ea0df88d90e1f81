"""Medical-Diff-VQA (Hu et al., 2023): chest X-ray difference questions, text fields only.

``mimic_pair_questions.csv`` (the official generator's output): ``study_id``, ``subject_id``,
``ref_id``, ``question_type``, ``question``, ``answer`` (and ``split`` when present). Credentialed:
local path only. Images are not read; the examples carry the study ids in ``meta``.
"""

from __future__ import annotations

from pathlib import Path

from medslm.data.examples import OpenQA
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split, split_of
from medslm.errors import DataError

ACCESS = ("it is derived from MIMIC-CXR: complete PhysioNet credentialing and download it from "
          "https://physionet.org/content/medical-diff-vqa/")
TYPES = {"abnormality", "presence", "view", "location", "level", "type", "difference"}


def load(root: Path, split: str | None, r: Reader) -> list[OpenQA]:
    files = [f for f in find_files(Path(root), ["*.csv"]) if "question" in f.name]
    if not files:
        raise DataError(f"mimic_diff_vqa: no mimic_pair_questions.csv under {root} "
                        "(the generator lexicons alone hold no QA pairs)")
    out = []
    for f in files:
        for line, rec in r.csv(f, ["study_id", "subject_id", "question_type", "question", "answer"]):
            q = r.field(f, f"line {line}", rec, "question")
            a = r.field(f, f"line {line}", rec, "answer")
            t = rec["question_type"].strip()
            if q is None or a is None:
                continue
            if t not in TYPES:
                r.bad(f, f"line {line}", "question_type", f"{t!r} is not one of {sorted(TYPES)}")
                continue
            s = (rec.get("split") or "").strip().lower() or split_of(rec["subject_id"], 0.1)
            s = {"val": "validation"}.get(s, s)
            out.append(OpenQA(id=f"diffvqa-{rec['study_id']}-{line}", split=s, question=q, answer=a,
                              source="MIMIC-CXR",
                              meta={"study_id": rec["study_id"], "subject_id": rec["subject_id"],
                                    "ref_id": rec.get("ref_id", ""), "question_type": t}))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="mimic_diff_vqa", kind="open_qa",
    description="Medical-Diff-VQA chest X-ray difference QA (text fields; local path only)",
    license="PhysioNet Credentialed Health Data License", upstream="PhysioNet medical-diff-vqa",
    load=load, splits=("train", "validation", "test"), credentialed=ACCESS,
    present=lambda p: p.is_dir() and any("question" in f.name for f in p.rglob("*.csv")),
    records="~700k QA pairs",
)
