"""Drug-combination synergy: DrugComb's summary table and the O'Neil/DeepSynergy table.

* DrugComb summary CSV (drugcomb.fimm.fi): ``drug_row``, ``drug_col``, ``cell_line_name``,
  ``synergy_loewe`` (also zip/hsa/bliss), ``tissue_name`` when present.
* The O'Neil et al. 2016 screen as used by DeepSynergy (the mirror): TSV ``drug_a``, ``drug_b``,
  ``cell_line``, ``score`` (Loewe-based), ``fold`` 0-4.

One Classification example per (pair, cell line): ``score`` is the synergy score, ``label`` is 1
when ``score > 30`` (DeepSynergy's threshold for "synergistic"; the task can set another). Split:
DeepSynergy fold 0 is ``test``; DrugComb rows use a fixed 10% hash split.
"""

from __future__ import annotations

from pathlib import Path

from medslm.data.examples import Classification
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split, split_of
from medslm.errors import DataError

THRESHOLD = 30.0


def _example(rid, split, a, b, cell, score, tissue, extra) -> Classification:
    fields = {"drug_a": a, "drug_b": b, "cell_line": cell}
    if tissue:
        fields["tissue"] = tissue
    text = f"Drug A: {a}. Drug B: {b}. Cell line: {cell}." + (f" Tissue: {tissue}." if tissue else "")
    return Classification(id=rid, split=split, text=text, label=int(score > THRESHOLD), score=score,
                          fields=fields, meta=extra)


def load(root: Path, split: str | None, r: Reader) -> list[Classification]:
    files = find_files(Path(root), ["*.tsv", "*.csv"])
    if not files:
        raise DataError(f"drugcomb: no .tsv/.csv under {root}")
    out = []
    for f in files:
        head = r.text(f).split("\n", 1)[0]
        delim = "\t" if "\t" in head else ","
        cols = [c.strip().lower() for c in head.split(delim)]
        if "drug_row" in cols:
            score_col = "synergy_loewe"
            for line, rec in r.csv(f, ["drug_row", "drug_col", "cell_line_name", score_col], delim):
                try:
                    s = float(rec[score_col])
                except ValueError:
                    r.bad(f, f"line {line}", score_col, f"{rec[score_col]!r} is not a number")
                    continue
                key = f"{rec['drug_row']}|{rec['drug_col']}|{rec['cell_line_name']}"
                extra = {k: rec.get(k) for k in ("synergy_zip", "synergy_hsa", "synergy_bliss",
                                                 "study_name", "block_id") if k in rec}
                out.append(_example(f"drugcomb-{rec.get('block_id') or line}", split_of(key),
                                    rec["drug_row"], rec["drug_col"], rec["cell_line_name"], s,
                                    rec.get("tissue_name", ""), extra))
        else:
            for line, rec in r.csv(f, ["drug_a", "drug_b", "cell_line", "score"], delim):
                try:
                    s = float(rec["score"])
                except ValueError:
                    r.bad(f, f"line {line}", "score", f"{rec['score']!r} is not a number")
                    continue
                fold = rec.get("fold", "")
                sp = "test" if fold.strip() == "0" else ("train" if fold.strip() else
                                                         split_of(f"{rec['drug_a']}|{rec['drug_b']}"))
                out.append(_example(f"oneil-{line - 1}", sp, rec["drug_a"], rec["drug_b"],
                                    rec["cell_line"], s, "", {"fold": fold}))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="drugcomb", kind="classification",
    description="Drug-pair x cell-line synergy (DrugComb summary; O'Neil/DeepSynergy table)",
    license="research use (DrugComb: CC BY-NC; O'Neil table: no explicit license)",
    upstream="drugcomb.fimm.fi summary table", load=load, splits=("train", "test"),
    urls={"summary_v_1_5.csv": "https://drugcomb.fimm.fi/jing/summary_v_1_5.csv"},
    present=lambda p: p.is_dir() and bool(find_files(p, ["*.tsv", "*.csv"])),
    records="~740k blocks (O'Neil: 23,052)",
)
