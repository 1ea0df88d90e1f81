"""IOB token/tag files (``token<TAB>tag`` per line, a blank line between sentences), the format of
the MTL-Bioinformatics-2016 NER corpora (NCBI-disease, BC5CDR, ...): read strictly, into
:class:`~medslm.data.examples.Entities` with their mentions."""

from __future__ import annotations

import re
from pathlib import Path

from medslm.data.examples import Entities
from medslm.data.reader import Reader
from medslm.errors import DataError

TAG = re.compile(r"^(O|[BI]-[A-Za-z][A-Za-z0-9_\-]*)$")


def mentions(tags: list[str], tokens: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each mention. An ``I-X`` that does not continue an ``X`` mention opens one
    (the CoNLL convention), so every tagged token belongs to exactly one mention."""
    out: list[tuple[str, list[str]]] = []
    prev = "O"
    for tok, tag in zip(tokens, tags):
        if tag == "O":
            prev = "O"
            continue
        kind, typ = tag.split("-", 1)
        if kind == "B" or prev != typ:
            out.append((typ, [tok]))
        else:
            out[-1][1].append(tok)
        prev = typ
    return [(t, " ".join(ws)) for t, ws in out]


def read(f: Path, r: Reader, dataset: str, split: str) -> list[Entities]:
    text = r.text(f)
    out, toks, tags, start = [], [], [], 1

    def close(line: int) -> None:
        if toks:
            n = len(out) + 1
            out.append(Entities(id=f"{dataset}-{split}-{n}", split=split, tokens=list(toks), tags=list(tags),
                                mentions=mentions(tags, toks), meta={"file": f.name, "line": start}))
        toks.clear()
        tags.clear()

    lines = text.split("\n")
    for i, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        if not line.strip():
            close(i)
            start = i + 1
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0]:
            r.bad(f, f"line {i}", None, f"expected 'token<TAB>tag', got {line!r:.60}")
            continue
        if not TAG.match(parts[1]):
            r.bad(f, f"line {i}", "tag", f"{parts[1]!r} is not O, B-TYPE or I-TYPE")
            continue
        toks.append(parts[0])
        tags.append(parts[1])
    close(len(lines))
    return out


def load(root: Path, split: str | None, r: Reader, dataset: str, files: dict[str, str]) -> list[Entities]:
    """``files``: split -> file name (e.g. {"train": "train.tsv", "devel": "devel.tsv"})."""
    root = Path(root)
    found = {s: root / n for s, n in files.items() if (root / n).is_file()}
    if not found:
        raise DataError(f"{dataset}: none of {', '.join(files.values())} under {root}")
    if split is not None and split not in found:
        raise DataError(f"{dataset}: no {split!r} split under {root}; splits here: {', '.join(found)} "
                        "(the test part is kept aside: evaluate on devel)")
    out = []
    for s, f in found.items():
        if split is None or s == split:
            out += read(f, r, dataset, s)
    return out


def spec(name: str, folder: str, description: str, records: str):
    """The DatasetSpec of an MTL-Bioinformatics-2016 IOB corpus (``data/<folder>/`` upstream)."""
    from medslm.data.sources import DatasetSpec

    files = {"train": "train.tsv", "devel": "devel.tsv", "test": "test.tsv"}
    base = f"https://raw.githubusercontent.com/cambridgeltl/MTL-Bioinformatics-2016/master/data/{folder}/"
    return DatasetSpec(
        name=name, kind="entities", description=description,
        license="CC BY 4.0 (as stated by the MTL-Bioinformatics-2016 release)",
        upstream="github cambridgeltl/MTL-Bioinformatics-2016", splits=("train", "devel", "test"),
        load=lambda root, split, r: load(root, split, r, name, files),
        urls={n: base + n for n in ("train.tsv", "devel.tsv")},
        present=lambda p: (p / "train.tsv").is_file() or (p / "devel.tsv").is_file(), records=records,
    )
