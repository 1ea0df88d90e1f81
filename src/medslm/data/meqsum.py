"""MeQSum (Ben Abacha & Demner-Fushman, ACL 2019): consumer health questions -> one-line summaries.

The original file is an Excel sheet with columns ``File``, ``CHQ`` (the consumer's question, often
"SUBJECT: ... MESSAGE: ...") and ``Summary`` (an expert's one-line question), 1,000 rows; read with
openpyxl (the maintained reader of the format). Upstream fixes no split: medslm holds out a fixed
``dev`` part of 10% by a hash of the source file name, the same on every machine; ``train`` is the
rest. Evaluate on ``dev``; fine-tune on ``train``.
"""

from __future__ import annotations

from pathlib import Path

from medslm.data.examples import OpenQA
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, find_files, select_split, split_of
from medslm.errors import DataError

COLUMNS = ("File", "CHQ", "Summary")


def read_xlsx(f: Path, r: Reader) -> list[tuple[int, dict]]:
    """(row number, {column: text}) of the first sheet; the header row names the columns."""
    try:
        import openpyxl
    except ImportError as e:  # a core dependency; a broken install gets the fix
        raise DataError("meqsum: reading .xlsx needs openpyxl: pip install openpyxl") from e
    try:
        wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
    except Exception as e:  # noqa: BLE001 - openpyxl raises several types for a damaged file
        raise DataError(f"meqsum: {f}: not a readable .xlsx workbook ({e}); re-download it") from None
    try:
        rows = wb.worksheets[0].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(rows, ())]
        missing = [c for c in COLUMNS[1:] if c not in header]
        if missing:
            raise DataError(f"meqsum: {f}: header {[h for h in header if h]} lacks column(s) "
                            f"{', '.join(missing)} (expected {', '.join(COLUMNS)})")
        col = {c: header.index(c) for c in COLUMNS if c in header}
        out = []
        for n, row in enumerate(rows, 2):
            if all(v is None or not str(v).strip() for v in row):
                continue  # trailing blank rows of the sheet
            out.append((n, {c: ("" if i >= len(row) or row[i] is None else str(row[i])) for c, i in col.items()}))
        return out
    finally:
        wb.close()


def load(root: Path, split: str | None, r: Reader) -> list[OpenQA]:
    files = find_files(Path(root), ["*.xlsx"])
    if not files:
        raise DataError(f"meqsum: no .xlsx under {root} (expected columns {', '.join(COLUMNS)})")
    out, seen = [], set()
    for f in files:
        for n, rec in read_xlsx(f, r):
            q = r.field(f, f"row {n}", rec, "CHQ")
            s = r.field(f, f"row {n}", rec, "Summary")
            if q is None or s is None:
                continue
            key = rec.get("File") or f"{f.name}:{n}"
            rid = f"meqsum-{key}"
            if rid in seen:
                r.bad(f, f"row {n}", "File", f"duplicate file name {key!r}")
                continue
            seen.add(rid)
            split_name = "dev" if split_of(key, salt="meqsum") == "test" else "train"
            out.append(OpenQA(id=rid, split=split_name, question=q.strip(), answer=s.strip(),
                              source="MeQSum", meta={"file": f.name, "row": n}))
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="meqsum", kind="open_qa",
    description="MeQSum: consumer health question -> one-line summary (fixed 10% dev split)",
    license="research use under the creators' terms (github abachaa/MeQSum)",
    upstream="github abachaa/MeQSum", load=load, splits=("train", "dev"),
    urls={"MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx":
          "https://github.com/abachaa/MeQSum/raw/master/MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx"},
    present=lambda p: p.is_dir() and bool(find_files(p, ["*.xlsx"])), records="1,000 pairs",
)
