"""The six medical subjects of MMLU (Hendrycks et al., 2021).

Reads the original CSV layout (``{dev,val,test}/<subject>_<split>.csv``: question, A, B, C, D,
answer letter; no header) and the HF ``cais/mmlu`` layout converted to JSONL
(``<subject>/<split>*.jsonl`` with ``question``, ``choices``, ``answer`` 0-3). ``meta['subject']``
names the subject; splits ``dev`` (few-shot), ``validation``, ``test``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medslm.data.examples import MultipleChoice
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split
from medslm.errors import DataError

SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
            "medical_genetics", "professional_medicine")
SPLIT_NAMES = {"dev": "dev", "val": "validation", "validation": "validation", "test": "test"}


def _mc(subject: str, split: str, q: str, options: list[str], ans: int) -> MultipleChoice:
    rid = f"mmlu-{subject}-" + hashlib.sha1((q + "".join(options)).encode()).hexdigest()[:10]
    return MultipleChoice(id=rid, split=split, question=q, options=options, answer=ans,
                          meta={"subject": subject})


def load(root: Path, split: str | None, r: Reader) -> list[MultipleChoice]:
    root = Path(root)
    out = []
    for f in find_files(root, ["*.csv", "*.jsonl"]):
        if f.suffix == ".csv":
            stem = f.stem
            subject = next((s for s in SUBJECTS if stem.startswith(s + "_")), None)
            if subject is None:
                continue
            s = SPLIT_NAMES.get(stem[len(subject) + 1:], stem[len(subject) + 1:])
            if split is not None and s != split:
                continue
            cols = ["question", "a", "b", "c", "d", "answer"]
            for line, rec in r.csv(f, cols, header=cols):
                ans = rec["answer"].strip()
                if not ans or ans not in "ABCD":
                    r.bad(f, f"line {line}", "answer", f"{rec['answer']!r} is not one of A-D")
                    continue
                if not rec["question"].strip():
                    r.bad(f, f"line {line}", "question", "empty")
                    continue
                out.append(_mc(subject, s, rec["question"], [rec[k] for k in "abcd"], "ABCD".index(ans)))
        else:
            subject = next((s for s in SUBJECTS if s in f.parts or f.stem.startswith(s)), None)
            if subject is None:
                continue
            s = SPLIT_NAMES.get(f.stem.split("-")[0].split("_")[-1], "test")
            if split is not None and s != split:
                continue
            for line, rec in r.jsonl(f):
                q = r.field(f, f"line {line}", rec, "question")
                ch = r.field(f, f"line {line}", rec, "choices", list)
                a = r.field(f, f"line {line}", rec, "answer", int)
                if q is None or ch is None or a is None:
                    continue
                if len(ch) != 4 or not 0 <= a <= 3:
                    r.bad(f, f"line {line}", "answer", f"{a} with {len(ch)} choices")
                    continue
                out.append(_mc(subject, s, q, ch, a))
    if not out and split is None:
        raise DataError(f"mmlu_medical: no files of the six medical subjects under {root} "
                        f"(expected e.g. test/anatomy_test.csv); subjects: {', '.join(SUBJECTS)}")
    return select_split(out, split, SPEC, root)


SPEC = DatasetSpec(
    name="mmlu_medical", kind="multiple_choice",
    description="MMLU medical subjects: " + ", ".join(SUBJECTS),
    license="MIT", upstream="HF cais/mmlu", load=load, splits=("dev", "validation", "test"),
    hf_repo="cais/mmlu", hf_patterns=tuple(f"{s}/*" for s in SUBJECTS), mirror_dirs=("mmlu",),
    present=lambda p: p.is_dir() and bool(find_files(p, ["*.csv", "*.jsonl"])),
    records="1,871 test",
)
