"""The offline redactor: recall per identifier category and false redactions on medical text."""

from __future__ import annotations

from collections import Counter

import pytest

from medslm.serve.phi_corpus import clean_sentences, phi_examples
from medslm.serve.safety import CATEGORIES, find, redact


def test_recall_per_category_on_the_synthetic_corpus():
    hit, tot = Counter(), Counter()
    for cat, sentence, ident in phi_examples(1000, seed=3):
        tot[cat] += 1
        i = sentence.find(ident)
        hit[cat] += any(s.start <= i and s.end >= i + len(ident) for s in find(sentence))
    assert set(tot) == set(CATEGORIES) and min(tot.values()) >= 1000
    recall = {c: hit[c] / tot[c] for c in CATEGORIES}
    assert all(r >= 0.99 for r in recall.values()), recall


def test_phi_free_medical_text_is_left_alone():
    n_tok = n_red = 0
    for s in clean_sentences(3000, seed=3):
        n_tok += len(s.split())
        n_red += sum(redact(s)[1].values())
    assert n_red / n_tok <= 0.01
    for keep in ("BP 120/80 mmHg", "potassium 3.5-5.0 mmol/L", "metformin 500 mg", "in 2019",
                 "HbA1c 7.2%", "aged 45 years", "a 67-year-old man", "QTc 450 ms", "E11.9", "p = 0.03",
                 "1:1000 epinephrine", "10.5 g/dL"):
        assert redact(keep)[0] == keep, keep


def test_placeholders_are_typed_and_counts_never_carry_the_value():
    text = ("92-year-old man, MRN 00123456, DOB 03/14/1931, phone (617) 555-0199, "
            "email j.doe@example.org, SSN 123-45-6789, seen 2024-02-01 at https://portal.example.org/x, "
            "from 10.0.0.12, Boston, MA 02114.")
    out, counts = redact(text)
    for secret in ("92-year-old", "00123456", "03/14/1931", "555-0199", "j.doe@", "123-45-6789",
                   "2024-02-01", "portal.example", "10.0.0.12", "02114"):
        assert secret not in out, secret
    assert "[AGE]" in out and "[ID]" in out and "[ZIP]" in out and "Boston" in out  # names/places: not covered
    assert counts == {"AGE": 1, "ID": 1, "DATE": 2, "PHONE": 1, "EMAIL": 1, "SSN": 1, "URL": 1, "IP": 1, "ZIP": 1}


def test_real_abstracts_are_almost_untouched(data_dir):
    from medslm.data import load_dataset

    n_tok = n_red = 0
    for ex in load_dataset("pubmedqa"):
        t = ex.text_for_overlap()
        n_tok += len(t.split())
        n_red += sum(redact(t)[1].values())
    assert n_tok > 50_000 and n_red / n_tok <= 0.01


def test_the_server_redacts_input_and_says_so():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from helpers.serving import make_app

    seen = []


    app = make_app()
    rt = app.state.medslm.engine.rt
    orig = rt.tokenize

    def spy(text, **kw):
        seen.append(text)
        return orig(text, **kw)

    rt.tokenize = spy
    c = TestClient(app)
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Call 617-555-0199 re MRN 8812345"}],
                                             "redact_input": True, "max_tokens": 2}).json()
    assert r["medslm_notes"] == ["input redacted: 1 ID, 1 PHONE"]
    assert any("[PHONE]" in s and "[ID]" in s for s in seen) and not any("555-0199" in s for s in seen)
