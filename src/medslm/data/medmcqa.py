"""MedMCQA (Pal et al., 2022): 4-option medical entrance-exam questions.

Hugging Face ``openlifescienceai/medmcqa`` field names (``question``, ``opa``..``opd``, ``cop`` 0-3,
``exp``, ``subject_name``, ...) in ``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl`` (test labels
are hidden upstream: ``cop`` -1 -> ``answer=None``). Also reads the ``choices``/``answer`` layout.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medslm.data.examples import MultipleChoice
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, iter_jsonl, select_split

SPLITS = {"train": "train", "validation": "validation", "dev": "validation", "test": "test"}


def _split_of(file: Path) -> str:
    stem = file.stem.split("-")[0].lower()
    return SPLITS.get(stem, stem)


def load(root: Path, split: str | None, r: Reader) -> list[MultipleChoice]:
    out = []
    for f, s, where, rec in iter_jsonl("medmcqa", root, split, _split_of, r, ("*.jsonl", "*.json")):
        q = r.field(f, where, rec, "question")
        if q is None:
            continue
        if "opa" in rec:
            opts = [r.field(f, where, rec, k) for k in ("opa", "opb", "opc", "opd")]
            ans = r.field(f, where, rec, "cop", int)
        else:
            ch = r.field(f, where, rec, "choices", list)
            opts = [c[3:] if isinstance(c, str) and c[1:3] == ". " else c for c in (ch or [])]
            ans = r.field(f, where, rec, "answer", int)
        if any(o is None for o in opts) or ans is None or len(opts) != 4:
            continue
        if ans == -1 and s == "test":
            ans = None
        elif not 0 <= ans <= 3:
            r.bad(f, where, "cop", f"{ans} is not in 0..3")
            continue
        rid = rec.get("id") or "mm-" + hashlib.sha1((q + "".join(opts)).encode()).hexdigest()[:12]
        meta = {k: rec.get(k) for k in ("exp", "subject_name", "topic_name", "choice_type")}
        out.append(MultipleChoice(id=str(rid), split=s, question=q, options=opts, answer=ans,
                                  meta=meta))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="medmcqa", kind="multiple_choice",
    description="MedMCQA: 4-option medical entrance-exam MCQ (validation = dev; test labels hidden)",
    license="MIT", upstream="HF openlifescienceai/medmcqa", load=load,
    splits=("train", "validation", "test"), hf_repo="openlifescienceai/medmcqa",
    present=lambda p: bool(find_files(p, ["*.jsonl"])) if p.is_dir() else False,
    records="194k (4,183 dev)",
)
