"""MedText (HF ``BI55/MedText``): clinical prompts with diagnosis/treatment completions.

A CSV with columns ``Prompt`` and ``Completion``. Upstream has only a train split; medslm fixes a
held-out ``test`` split of 10% by a hash of the prompt, so it is the same on every machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medslm.data.examples import OpenQA
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split, split_of
from medslm.errors import DataError


def load(root: Path, split: str | None, r: Reader) -> list[OpenQA]:
    files = find_files(Path(root), ["*.csv"])
    if not files:
        raise DataError(f"medtext: no CSV under {root} (expected columns Prompt, Completion)")
    out = []
    for f in files:
        for line, rec in r.csv(f, ["Prompt", "Completion"]):
            p = r.field(f, f"line {line}", rec, "prompt")
            c = r.field(f, f"line {line}", rec, "completion")
            if p is None or c is None:
                continue
            rid = "medtext-" + hashlib.sha1(p.encode()).hexdigest()[:12]
            out.append(OpenQA(id=rid, split=split_of(p, salt="medtext"), question=p, answer=c,
                              source="MedText", meta={"file": f.name, "line": line}))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="medtext", kind="open_qa",
    description="MedText: clinical prompts -> diagnosis/treatment completions (fixed 10% test split)",
    license="CC BY 4.0", upstream="HF BI55/MedText", load=load, splits=("train", "test"),
    hf_repo="BI55/MedText", hf_patterns=("*.csv",),
    present=lambda p: p.is_dir() and bool(find_files(p, ["*.csv"])), records="~1,400",
)
