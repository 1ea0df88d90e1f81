"""MIMIC-III (Johnson et al., 2016): one Classification example per hospital admission.

Reads the official CSV tables (upper-case file names, any-case headers) from a local path only:
``ADMISSIONS``, ``PATIENTS``, ``DIAGNOSES_ICD``, ``D_ICD_DIAGNOSES`` and ``NOTEEVENTS`` when present.
The example's text summarizes what is known of the admission (age, sex, admission type and source,
insurance, admitting diagnosis, coded diagnoses, non-discharge notes); its label is in-hospital
death (``HOSPITAL_EXPIRE_FLAG``). Fields that reveal the outcome (death time, discharge location,
date of death, discharge summaries) are never put in the text. Split: ``test`` for a fixed 20% of
patients (hash of SUBJECT_ID), so no patient is in both splits.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

from medslm.data.examples import Classification
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, select_split, split_of
from medslm.errors import DataError

ACCESS = ("complete PhysioNet credentialing and sign the data use agreement at "
          "https://physionet.org/content/mimiciii/ (the 100-patient demo is open at "
          "https://physionet.org/content/mimiciii-demo/)")


def _table(root: Path, name: str, required: list[str], r: Reader, optional: bool = False):
    f = root / f"{name}.csv"
    if not f.is_file():
        gz = root / f"{name}.csv.gz"
        if gz.is_file():
            raise DataError(f"mimic3: {gz} is compressed; gunzip it first")
        if optional:
            return []
        raise DataError(f"mimic3: {f} not found; MIMIC-III needs ADMISSIONS, PATIENTS, "
                        "DIAGNOSES_ICD and D_ICD_DIAGNOSES (.csv)")
    return list(r.csv(f, required))


def tables(root: Path, r: Reader | None = None) -> dict[str, int]:
    """Row counts of the main tables (for `data stats`)."""
    r = r or Reader("mimic3")
    root = Path(root)
    return {n: len(_table(root, n, [], r, optional=True)) for n in
            ("ADMISSIONS", "PATIENTS", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES", "NOTEEVENTS")}


def _age(dob: str, admit: str) -> str:
    try:
        a = dt.datetime.fromisoformat(admit[:19])
        b = dt.datetime.fromisoformat(dob[:19])
    except ValueError:
        return "unknown"
    years = a.year - b.year - ((a.month, a.day) < (b.month, b.day))
    return "over 89" if years > 89 else str(years)  # MIMIC shifts ages > 89 to ~300


def load(root: Path, split: str | None, r: Reader) -> list[Classification]:
    root = Path(root)
    adm = _table(root, "ADMISSIONS", ["subject_id", "hadm_id", "admittime", "hospital_expire_flag"], r)
    pts = {rec["subject_id"]: rec for _, rec in _table(root, "PATIENTS", ["subject_id", "gender", "dob"], r)}
    titles = {rec["icd9_code"]: rec.get("long_title", "") for _, rec in
              _table(root, "D_ICD_DIAGNOSES", ["icd9_code", "long_title"], r)}
    diags = defaultdict(list)
    for _, rec in _table(root, "DIAGNOSES_ICD", ["hadm_id", "icd9_code"], r):
        try:
            seq = int(rec.get("seq_num") or 999)
        except ValueError:
            seq = 999
        diags[rec["hadm_id"]].append((seq, rec["icd9_code"]))
    notes = defaultdict(list)
    for _, rec in _table(root, "NOTEEVENTS", ["hadm_id", "category", "text"], r, optional=True):
        if rec["hadm_id"] and "discharge" not in rec["category"].lower():
            notes[rec["hadm_id"]].append(f"{rec['category'].strip()}: {rec['text'].strip()}")
    f = root / "ADMISSIONS.csv"
    out = []
    for line, rec in adm:
        flag = rec["hospital_expire_flag"].strip()
        if flag not in ("0", "1"):
            r.bad(f, f"line {line}", "hospital_expire_flag", f"{flag!r} is not 0 or 1")
            continue
        p = pts.get(rec["subject_id"])
        if p is None:
            r.bad(f, f"line {line}", "subject_id", f"{rec['subject_id']} not in PATIENTS.csv")
            continue
        codes = [c for _, c in sorted(diags.get(rec["hadm_id"], []))]
        dx = [titles.get(c) or f"ICD-9 {c}" for c in codes]
        fields = {"age": _age(p["dob"], rec["admittime"]), "sex": p["gender"],
                  "admission_type": rec.get("admission_type", ""),
                  "admission_location": rec.get("admission_location", ""),
                  "insurance": rec.get("insurance", ""),
                  "admitting_diagnosis": rec.get("diagnosis", ""), "diagnoses": dx}
        text = (f"Patient: {fields['age']} years old, sex {fields['sex']}. "
                f"Admission: {fields['admission_type'].lower()} via {fields['admission_location'].lower()}, "
                f"insurance {fields['insurance']}. Admitting diagnosis: {fields['admitting_diagnosis']}. "
                f"Diagnoses: {'; '.join(dx[:12]) or 'none coded'}.")
        if notes.get(rec["hadm_id"]):
            text += " Notes: " + " ".join(notes[rec["hadm_id"]])[:4000]
        out.append(Classification(id=f"mimic3-{rec['hadm_id']}", split=split_of(rec["subject_id"], 0.2),
                                  text=text, label=int(flag), fields=fields,
                                  meta={"subject_id": rec["subject_id"], "hadm_id": rec["hadm_id"],
                                        "icd9": codes}))
    return select_split(out, split, SPEC, root)


SPEC = DatasetSpec(
    name="mimic3", kind="classification",
    description="MIMIC-III admissions -> in-hospital mortality (local path only; demo or full)",
    license="PhysioNet Credentialed Health Data License (demo: ODbL)",
    upstream="PhysioNet mimiciii (credentialed) / mimiciii-demo", load=load, splits=("train", "test"),
    mirror_dirs=("mimic3_demo", "mimic-iii"), credentialed=ACCESS,
    present=lambda p: (p / "ADMISSIONS.csv").is_file(), records="58,976 admissions (demo: 129)",
)
