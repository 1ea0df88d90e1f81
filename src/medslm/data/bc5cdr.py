"""BC5CDR (Li et al. 2016): chemical and disease mentions in PubMed abstracts, IOB (Chemical, Disease).

The MTL-Bioinformatics-2016 release: ``train.tsv``, ``devel.tsv`` (and ``test.tsv``, kept aside in
the mirror), read by :mod:`medslm.data.iob`."""

from __future__ import annotations

from pathlib import Path

from medslm.data import iob
from medslm.data.sources import DatasetSpec

FILES = {"train": "train.tsv", "devel": "devel.tsv", "test": "test.tsv"}
BASE = "https://raw.githubusercontent.com/cambridgeltl/MTL-Bioinformatics-2016/master/data/BC5CDR-IOB/"


def load(root: Path, split, r):
    return iob.load(root, split, r, "bc5cdr", FILES)


SPEC = DatasetSpec(
    name="bc5cdr", kind="entities", description="BC5CDR: chemical and disease mention recognition (IOB)",
    license="CC BY 4.0 (as stated by the MTL-Bioinformatics-2016 release)",
    upstream="github cambridgeltl/MTL-Bioinformatics-2016", load=load, splits=("train", "devel", "test"),
    urls={n: BASE + n for n in ("train.tsv", "devel.tsv")},
    present=lambda p: (p / "train.tsv").is_file() or (p / "devel.tsv").is_file(),
    records="train 4,560 + devel 4,581 sentences",
)
