"""AMEGA (Fast et al., 2024): guideline adherence of answers to clinical cases.

Four ``;``-separated tables from github DATEXIS/AMEGA-benchmark ``data/``: ``cases.csv`` (case_id,
case_str, specialty, title), ``questions.csv`` (case_id, question_id, question_str),
``sections.csv`` (case_id, question_id, section_id, points: the rubric sections with their point
weights) and ``criteria.csv`` (case_id, question_id, section_id, criteria_str, optional points).
One Rubric example per question. A criterion's weight is its own ``points`` when given, else its
section's points split equally among the section's criteria; so a question's score is the points
of its sections earned by the criteria met. AMEGA's terms make it evaluation-only: medslm refuses
to train on it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from medslm.data.examples import Criterion, Rubric
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, select_split
from medslm.errors import DataError

FILES = ("cases.csv", "questions.csv", "sections.csv", "criteria.csv")
BASE = "https://raw.githubusercontent.com/DATEXIS/AMEGA-benchmark/main/data/"


def _col(rec: dict, *names: str) -> str | None:
    for n in names:
        if n in rec:
            return rec[n]
    return None


def load(root: Path, split: str | None, r: Reader) -> list[Rubric]:
    root = Path(root)
    for name in FILES:
        if not (root / name).is_file():
            raise DataError(f"amega: {root / name} not found; AMEGA needs {', '.join(FILES)} "
                            "(';'-separated, from github DATEXIS/AMEGA-benchmark data/)")
    cases = {}
    f = root / "cases.csv"
    for line, rec in r.csv(f, ["case_id", "case_str"], delimiter=";"):
        c = r.field(f, f"line {line}", rec, "case_str")
        if c is not None:
            cases[rec["case_id"].strip()] = (c, rec)
    sections: dict[tuple[str, str, str], float] = {}
    f = root / "sections.csv"
    for line, rec in r.csv(f, ["case_id", "question_id"], delimiter=";"):
        sid = _col(rec, "section_id", "section")
        pts = _col(rec, "points", "section_points", "weight")
        try:
            sections[(rec["case_id"].strip(), rec["question_id"].strip(), (sid or "").strip())] = float(pts)
        except (TypeError, ValueError):
            r.bad(f, f"line {line}", "points", f"{pts!r} is not a number")
    crit: dict[tuple[str, str], list[tuple[str, str, float | None]]] = defaultdict(list)
    f = root / "criteria.csv"
    for line, rec in r.csv(f, ["case_id", "question_id", "criteria_str"], delimiter=";"):
        text = r.field(f, f"line {line}", rec, "criteria_str")
        if text is None:
            continue
        sid = (_col(rec, "section_id", "section") or "").strip()
        pts = _col(rec, "points", "criteria_points")
        try:
            w = float(pts) if pts not in (None, "") else None
        except ValueError:
            r.bad(f, f"line {line}", "points", f"{pts!r} is not a number")
            continue
        crit[(rec["case_id"].strip(), rec["question_id"].strip())].append((sid, text, w))
    out = []
    f = root / "questions.csv"
    for line, rec in r.csv(f, ["case_id", "question_id", "question_str"], delimiter=";"):
        cid, qid = rec["case_id"].strip(), rec["question_id"].strip()
        q = r.field(f, f"line {line}", rec, "question_str")
        if q is None:
            continue
        if cid not in cases:
            r.bad(f, f"line {line}", "case_id", f"{cid!r} not in cases.csv")
            continue
        items = crit.get((cid, qid), [])
        if not items:
            r.bad(f, f"line {line}", "question_id", f"question {cid}/{qid} has no criteria in criteria.csv")
            continue
        per_section = defaultdict(int)
        for sid, _, _ in items:
            per_section[sid] += 1
        criteria = []
        for sid, text, w in items:
            if w is None:
                pts = sections.get((cid, qid, sid))
                w = pts / per_section[sid] if pts is not None else 1.0
            criteria.append(Criterion(text=text, weight=w, section=sid))
        case_str, case_rec = cases[cid]
        out.append(Rubric(id=f"amega-{cid}-{qid}", split="test", case=case_str, question=q,
                          criteria=criteria, meta={"case_id": cid, "question_id": qid,
                                                   "specialty": case_rec.get("specialty", ""),
                                                   "title": case_rec.get("title", "")}))
    return select_split(out, split, SPEC, root)


SPEC = DatasetSpec(
    name="amega", kind="rubric",
    description="AMEGA: clinical cases, questions and weighted guideline criteria (evaluation only)",
    license="AMEGA terms: evaluation only", upstream="github DATEXIS/AMEGA-benchmark data/",
    load=load, splits=("test",), urls={n: BASE + n for n in FILES},
    present=lambda p: (p / "criteria.csv").is_file(),
    eval_only="AMEGA's terms allow evaluation only; it must not be used for training",
    records="20 cases, 135 questions, 1,337 criteria",
)
