"""MedSafetyBench (Han et al., NeurIPS 2024 D&B): harmful medical requests with safe responses.

CSV files ``{train,test}/{gpt4,llama2}/med_safety_demonstrations_category_{1..9}.csv`` with an
unnamed index column, ``harmful_medical_request`` and ``safe_response``; the category (one of the
nine principles of the AMA's Code of Medical Ethics) is in the file name and the generator (gpt4,
llama2) in the folder. The mirror holds the ``train`` part only (the test part is kept aside);
medslm holds out a fixed ``dev`` part of 10% of it by a hash of the request, the same on every
machine. Files under a ``test/`` folder, when present, are the ``test`` split.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from medslm.data.examples import OpenQA
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split, split_of
from medslm.errors import DataError

CATEGORY = re.compile(r"category_(\d+)")
# the nine principles of the AMA Code of Medical Ethics, MedSafetyBench's categories
PRINCIPLES = {
    1: "competent, compassionate care with respect for human dignity and rights",
    2: "professionalism and honesty; reporting deficient or fraudulent physicians",
    3: "respect for the law; changing laws contrary to patients' interests",
    4: "rights of patients and colleagues; confidentiality and privacy",
    5: "continued study, applying and advancing scientific knowledge",
    6: "freedom to choose whom to serve, except in emergencies",
    7: "participating in activities that improve the community and public health",
    8: "responsibility to the patient as paramount",
    9: "support of access to medical care for all people",
}


def load(root: Path, split: str | None, r: Reader) -> list[OpenQA]:
    root = Path(root)
    files = find_files(root, ["*.csv"])
    if not files:
        raise DataError(f"medsafety: no CSV under {root} (expected "
                        "train/{gpt4,llama2}/med_safety_demonstrations_category_N.csv)")
    out = []
    for f in files:
        m = CATEGORY.search(f.name)
        if not m or int(m.group(1)) not in PRINCIPLES:
            raise DataError(f"medsafety: {f}: the file name names no category 1-9 "
                            "(expected med_safety_demonstrations_category_N.csv)")
        cat = int(m.group(1))
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        parts = rel.split("/")
        upstream_test = "test" in parts[:-1]
        gen = next((p for p in parts[:-1] if p in ("gpt4", "llama2")), "")
        for line, rec in r.csv(f, ["harmful_medical_request", "safe_response"]):
            q = r.field(f, f"line {line}", rec, "harmful_medical_request")
            a = r.field(f, f"line {line}", rec, "safe_response")
            if q is None or a is None:
                continue
            q = q.strip()
            rid = "medsafety-" + hashlib.sha1(f"{cat}:{gen}:{q}".encode()).hexdigest()[:12]
            sp = "test" if upstream_test else ("dev" if split_of(q, salt="medsafety") == "test" else "train")
            out.append(OpenQA(id=rid, split=sp, question=q, answer=a.strip(), source=f"MedSafetyBench/{gen}",
                              meta={"category": cat, "generator": gen, "file": rel, "line": line}))
    return select_split(out, split, SPEC, root)


SPEC = DatasetSpec(
    name="medsafety", kind="open_qa", mirror_dirs=("med_safety_bench",),
    description="MedSafetyBench: harmful medical requests -> safe responses, 9 AMA categories (fixed 10% dev)",
    license="MIT", upstream="github AI4LIFE-GROUP/med-safety-bench", load=load, splits=("train", "dev"),
    urls={f"train/{g}/med_safety_demonstrations_category_{c}.csv":
          f"https://github.com/AI4LIFE-GROUP/med-safety-bench/raw/main/datasets/train/{g}/"
          f"med_safety_demonstrations_category_{c}.csv" for g in ("gpt4", "llama2") for c in range(1, 10)},
    present=lambda p: p.is_dir() and bool(find_files(p, ["*.csv"])), records="900 train requests",
)
