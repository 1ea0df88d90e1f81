"""ChemProt (BioCreative VI): the relation between a chemical and a protein in a PubMed sentence.

SciBERT's release: JSON lines ``{"text", "label", "metadata"}`` in ``train.txt``, ``dev.txt`` (and
``test.txt``, kept aside in the mirror); the chemical is marked ``<< >>`` and the protein ``[[ ]]``
in ``text``; ``label`` is one of 13 fine-grained relations, which BLURB groups into the five
evaluated CPR classes: CPR:3 upregulator/activator, CPR:4 downregulator/inhibitor, CPR:5 agonist,
CPR:6 antagonist, CPR:9 substrate/product. Records are multiple choice over those five groups; the
fine label is kept in ``meta``. This release holds positive relations only (no "false" class), so
micro-F1 over the five classes equals accuracy; macro-F1 is reported beside it.
"""

from __future__ import annotations

from pathlib import Path

from medslm.data.examples import MultipleChoice
from medslm.data.reader import Reader
from medslm.data.sources import DatasetSpec, iter_jsonl, select_split
from medslm.errors import DataError

GROUPS = {  # BLURB / BioCreative VI: fine label -> evaluated CPR group
    "UPREGULATOR": "CPR:3", "ACTIVATOR": "CPR:3", "INDIRECT-UPREGULATOR": "CPR:3",
    "DOWNREGULATOR": "CPR:4", "INHIBITOR": "CPR:4", "INDIRECT-DOWNREGULATOR": "CPR:4",
    "AGONIST": "CPR:5", "AGONIST-ACTIVATOR": "CPR:5", "AGONIST-INHIBITOR": "CPR:5",
    "ANTAGONIST": "CPR:6",
    "SUBSTRATE": "CPR:9", "PRODUCT-OF": "CPR:9", "SUBSTRATE_PRODUCT-OF": "CPR:9",
}
CLASSES = ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]
NAMES = ["upregulator", "inhibitor", "agonist", "antagonist", "substrate"]  # the choices the model scores
SPLITS = {"train.txt": "train", "dev.txt": "dev", "test.txt": "test"}


def _split(f: Path) -> str:
    return SPLITS.get(f.name, f.stem)


def load(root: Path, split: str | None, r: Reader) -> list[MultipleChoice]:
    out, n = [], {}
    for f, s, where, rec in iter_jsonl("chemprot", Path(root), split, _split, r, patterns=("*.txt", "*.jsonl")):
        if f.name == "SOURCE.md":
            continue
        text = r.field(f, where, rec, "text")
        label = r.field(f, where, rec, "label")
        if text is None or label is None:
            continue
        if label not in GROUPS:
            r.bad(f, where, "label", f"{label!r} is not a ChemProt relation ({', '.join(sorted(GROUPS))})")
            continue
        if "<<" not in text or "[[" not in text:
            r.bad(f, where, "text", "the chemical (<< >>) or the protein ([[ ]]) is not marked")
            continue
        n[s] = n.get(s, 0) + 1
        out.append(MultipleChoice(id=f"chemprot-{s}-{n[s]}", split=s, question=text, options=list(NAMES),
                                  answer=CLASSES.index(GROUPS[label]),
                                  meta={"label": label, "group": GROUPS[label], "file": f.name}))
    if not out:
        raise DataError(f"chemprot: no records under {root}")
    return select_split(out, split, SPEC, Path(root))


SPEC = DatasetSpec(
    name="chemprot", kind="multiple_choice",
    description="ChemProt chemical-protein relations, 5 CPR classes (BLURB's grouping)",
    license="research use (BioCreative VI ChemProt); SciBERT's release Apache-2.0",
    upstream="github allenai/scibert data/text_classification/chemprot", load=load,
    splits=("train", "dev", "test"),
    urls={n: "https://raw.githubusercontent.com/allenai/scibert/master/data/text_classification/chemprot/" + n
          for n in ("train.txt", "dev.txt")},
    present=lambda p: (p / "train.txt").is_file() or (p / "dev.txt").is_file(),
    records="train 4,169 + dev 2,427",
)
