"""The loaders on the real data mirror (skipped when MEDSLM_DATA_DIR is unset)."""

from collections import Counter

import pytest

from medslm.data import load_dataset
from medslm.errors import DataError


def test_pubmedqa(data_dir):
    ex = load_dataset("pubmedqa")
    assert len(ex) == 500
    assert Counter(e.options[e.answer] for e in ex) == {"yes": 276, "no": 169, "maybe": 55}
    assert len({e.id for e in ex}) == 500 and all(e.context and e.question for e in ex)
    with pytest.raises(DataError, match="test_ground_truth.json"):
        load_dataset("pubmedqa", split="test")


def test_medmcqa(data_dir):
    ex = load_dataset("medmcqa", split="validation")
    assert len(ex) == 3183 and {e.answer for e in ex} <= {0, 1, 2, 3}
    assert all(len(e.options) == 4 for e in ex) and len({e.id for e in ex}) == 3183


def test_medquad(data_dir):
    ex = load_dataset("medquad")
    assert len(ex) == 14273
    assert sum(e.meta["answered"] for e in ex) == 14268
    assert len({e.source for e in ex}) == 9
    assert len({e.id for e in ex}) == len(ex)


def test_mimic3_demo(data_dir):
    from medslm.data.mimic3 import tables

    ex = load_dataset("mimic3")
    assert len(ex) == 129
    t = tables(ex.root)
    assert t["PATIENTS"] == 100 and t["DIAGNOSES_ICD"] == 1761 and t["ADMISSIONS"] == 129
    assert {e.label for e in ex} == {0, 1}
    # nothing that reveals the outcome reaches the text
    assert not any("expire" in e.text.lower() or "dead" in e.text.lower() for e in ex)
    # no patient in both splits
    by = {s: {e.meta["subject_id"] for e in ex if e.split == s} for s in ("train", "test")}
    assert not by["train"] & by["test"]


def test_drugcomb_oneil(data_dir):
    ex = load_dataset("drugcomb")
    assert len(ex) == 23052
    assert len({e.fields["drug_a"] for e in ex} | {e.fields["drug_b"] for e in ex}) == 38
    assert all((e.score > 30) == bool(e.label) for e in ex)


def test_cli_ls_and_show(data_dir):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "medslm", "data", "ls"], capture_output=True, text=True)
    assert p.returncode == 0
    line = next(x for x in p.stdout.splitlines() if x.startswith("pubmedqa"))
    assert line.rstrip().endswith("yes")
    p = subprocess.run([sys.executable, "-m", "medslm", "data", "show", "pubmedqa", "--n", "1"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "pubmedqa-" in p.stdout and "question" in p.stdout


def test_meqsum(data_dir):
    ex = load_dataset("meqsum")
    assert len(ex) == 1000 and len({e.id for e in ex}) == 1000
    assert Counter(e.split for e in ex) == {"train": 902, "dev": 98}
    assert all(e.question.strip() and e.answer.strip() for e in ex)


def test_medsafety(data_dir):
    ex = load_dataset("medsafety")
    assert len(ex) == 900 and len({e.id for e in ex}) == 900
    assert Counter(e.meta["generator"] for e in ex) == {"gpt4": 450, "llama2": 450}
    assert sorted(Counter(e.meta["category"] for e in ex).items()) == [
        (1, 109), (2, 107), (3, 81), (4, 106), (5, 100), (6, 74), (7, 111), (8, 114), (9, 98)]
    assert Counter(e.split for e in ex) == {"train": 804, "dev": 96}


@pytest.mark.parametrize("name,split,n,counts", [
    ("ncbi_disease", "train", 5424, {"Disease": 5134}), ("ncbi_disease", "devel", 923, {"Disease": 787}),
    ("bc5cdr", "train", 4560, {"Chemical": 5203, "Disease": 4182}),
    ("bc5cdr", "devel", 4581, {"Chemical": 5347, "Disease": 4246}),
])
def test_ner_corpora(data_dir, name, split, n, counts):
    ex = load_dataset(name, split=split)
    assert len(ex) == n and Counter(t for e in ex for t, _ in e.mentions) == counts


def test_chemprot(data_dir):
    dev = load_dataset("chemprot", split="dev")
    assert len(load_dataset("chemprot", split="train")) == 4169 and len(dev) == 2427
    assert Counter(e.meta["group"] for e in dev) == {"CPR:4": 1103, "CPR:3": 552, "CPR:9": 457, "CPR:6": 199,
                                                     "CPR:5": 116}
