"""NER (IOB loaders, mention extraction, the strict parser, entity-level F1 against hand counts) and
ChemProt (the CPR grouping, multiple choice over the five classes)."""

from __future__ import annotations

import pytest
from helpers import fixtures

from medslm.backends.base import cut_at_stop
from medslm.backends.dummy import DummyBackend
from medslm.data import load_dataset
from medslm.data.iob import mentions
from medslm.errors import DataError
from medslm.evaluate.runner import evaluate
from medslm.tasks.ner import parse


@pytest.fixture
def data(tmp_path, monkeypatch):
    for name in ("ncbi_disease", "bc5cdr"):
        fixtures.iob(tmp_path / "d" / name)
    fixtures.chemprot(tmp_path / "d" / "chemprot")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEDSLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "d"


def test_iob_mentions_follow_conll():
    toks = "a b c d e f".split()
    assert mentions(["B-X", "I-X", "O", "I-X", "B-Y", "I-X"], toks) == [("X", "a b"), ("X", "d"), ("Y", "e"), ("X", "f")]


def test_iob_loader_and_strict_errors(data):
    ex = load_dataset("bc5cdr", split="devel")
    assert len(ex) == 3 and ex[1].mentions == [("Chemical", "Aspirin"), ("Disease", "asthma")]
    assert ex[0].text == "Germline mutations cause breast cancer and ataxia ."
    with pytest.raises(DataError, match="kept aside: evaluate on devel"):
        load_dataset("ncbi_disease", split="test")
    f = data / "ncbi_disease" / "devel.tsv"
    f.write_text("Germline\tO\nbreast\tB-Disease\tcancer\n")
    with pytest.raises(DataError, match=r"devel.tsv: record line 2: expected 'token<TAB>tag'"):
        load_dataset("ncbi_disease", split="devel")
    f.write_text("Germline\tO\nbreast\tX-Disease\n")
    with pytest.raises(DataError, match=r"line 2, field 'tag': 'X-Disease' is not O, B-TYPE or I-TYPE"):
        load_dataset("ncbi_disease", split="devel")
    assert len(load_dataset("ncbi_disease", split="devel", lenient=True)) == 1


@pytest.mark.parametrize("out,want", [
    (" breast cancer; ataxia", ["breast cancer", "ataxia"]), (" none", []), (" None.", []),
    ("", None), (" ;  ; ", None), (" asthma\nDiseases: more", ["asthma"]),
])
def test_parser(out, want):
    assert parse(out) == want


class Scripted(DummyBackend):
    def __init__(self, answer):
        super().__init__("scripted")
        self.answer = answer

    def generate(self, requests):
        return [cut_at_stop(self.answer(r.context), r.until) for r in requests]


def test_entity_f1_against_hand_counts(data):
    def answer(p):
        if "Chemicals:" in p:
            return " Aspirin" if "Aspirin" in p else " none"
        if "Germline" in p:
            return " breast cancer; Germline mutations"  # one right, one wrong (in the sentence)
        if "Aspirin" in p:
            return " ASTHMA; pneumonia"  # case-folded match; one not in the sentence
        return ""  # unparsed: no gold mentions here, so nothing missed
    r = evaluate(Scripted(answer), ["bc5cdr"], bootstrap=20, measure_decode=False)[0]
    m = {k: v["value"] for k, v in r["metrics"].items()}
    # Disease: tp 2 (breast cancer, asthma), fp 2, fn 1 (ataxia); Chemical: tp 1, fp 0, fn 0
    p, rc = 3 / 5, 3 / 4
    assert m["precision"] == pytest.approx(p) and m["recall"] == pytest.approx(rc)
    assert m["f1"] == pytest.approx(2 * p * rc / (p + rc))
    assert m["f1_chemical"] == pytest.approx(1.0) and m["f1_disease"] == pytest.approx(2 * 0.5 * 2 / 3 / (0.5 + 2 / 3))
    assert m["unparsed_rate"] == pytest.approx(1 / 6) and m["unfound_items"] == 1.0
    assert r["metrics"]["f1"]["ci95"] is not None


def test_ner_trains_one_pair_per_type(data):
    from medslm.train.data import training_pairs

    e = load_dataset("bc5cdr", split="train")[1]
    pairs = training_pairs("bc5cdr", e)
    assert [t for _, t in pairs] == [" Aspirin", " asthma"] and pairs[0][0].endswith("\nChemicals:")
    assert [t for _, t in training_pairs("ncbi_disease", load_dataset("ncbi_disease", split="train")[2])] == [" none"]


def test_chemprot_groups_and_multiple_choice(data):
    ex = load_dataset("chemprot", split="dev")
    assert [e.meta["group"] for e in ex] == ["CPR:4", "CPR:3", "CPR:5", "CPR:6", "CPR:9", "CPR:4"]
    assert ex[0].options == ["upregulator", "inhibitor", "agonist", "antagonist", "substrate"]

    class Says(DummyBackend):  # always prefers " inhibitor"
        def loglikelihood(self, requests):
            return [(0.0 if r.continuation == " inhibitor" else -3.0, False) for r in requests]

    r = evaluate(Says(), ["chemprot"], bootstrap=0, measure_decode=False)[0]
    assert r["metrics"]["acc"]["value"] == pytest.approx(2 / 6)
    # macro-F1 over the five classes: only CPR:4 has F1 > 0 (tp 2, fp 4): 2*2/(2*2+4) / 5
    assert r["metrics"]["macro_f1"]["value"] == pytest.approx((4 / 8) / 5)
    bad = data / "chemprot" / "dev.txt"
    bad.write_text('{"text": "<< a >> and [[ b ]]", "label": "FRIEND", "metadata": []}\n')
    with pytest.raises(DataError, match="'FRIEND' is not a ChemProt relation"):
        load_dataset("chemprot", split="dev")
