"""Evaluation: every task family on fixtures, exactness vs the logits, resume, batch invariance."""

import json
import math
import os
import subprocess
import sys

import fixtures
import pytest
import tiny

from medslm.backends.dummy import DummyBackend
from medslm.backends.hf import HFBackend
from medslm.evaluate.runner import evaluate
from medslm.tasks import TASKS, get_task
from medslm.tasks.classification import auprc, auroc
from medslm.tasks.multiple_choice import macro_f1


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa")
    fixtures.medmcqa(root / "medmcqa")
    fixtures.medqa(root / "medqa")
    fixtures.mmlu(root / "mmlu_medical")
    fixtures.medquad(root / "medquad")
    fixtures.medtext(root / "medtext")
    fixtures.amega(root / "amega")
    fixtures.drugcomb_summary(root / "drugcomb")
    fixtures.mimic3(root / "mimic3")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def gemma_tiny():
    return HFBackend(tiny.model("gemma3"), tiny.tokenizer(), batch_size=4)


def test_task_registry_lists_everything():
    names = TASKS.names()
    for n in ["pubmedqa", "medmcqa", "medqa_4options", "mmlu_anatomy", "mmlu_professional_medicine",
              "pubmedqa_cot", "medquad", "medtext", "amega", "drugcomb_synergy", "mimic3_mortality", "medppl"]:
        assert n in names
    p = subprocess.run([sys.executable, "-m", "medslm", "eval", "--tasks", "ls"], capture_output=True, text=True)
    assert p.returncode == 0 and "pubmedqa" in p.stdout and "prompt" in p.stdout


def test_prompts_match_lm_eval():
    from medslm.data.examples import MultipleChoice

    e = MultipleChoice(id="x", question="Q?", options=["a", "b", "c", "d"], answer=1, context="C1\nC2")
    assert get_task("pubmedqa").text(e) == "Abstract: C1\nC2\nQuestion: Q?\nAnswer:"
    assert get_task("medmcqa").text(e) == "Question: Q?\nChoices:\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert get_task("medqa_4options").text(e) == "Question: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    t = get_task("mmlu_college_medicine")
    e.meta["subject"] = "college_medicine"
    assert t.prompt(e) == ("The following are multiple choice questions (with answers) about college "
                           "medicine.\n\nQ?\nA. a\nB. b\nC. c\nD. d\nAnswer:")


def test_multiple_choice_equals_direct_logits(mirror, gemma_tiny, tmp_path):
    """medslm's log-likelihoods and predictions equal those computed directly from the logits."""
    import torch

    model, tok = gemma_tiny.model, gemma_tiny.tokenizer
    res = evaluate(gemma_tiny, ["medmcqa", "pubmedqa"], bootstrap=0, measure_decode=False,
                   cache_path=tmp_path / "c.sqlite", progress=False)
    checked = 0
    for r, task in zip(res, ["medmcqa", "pubmedqa"]):
        t = get_task(task)
        exs = {e.id: e for e in t.examples()}
        for rec in r["examples"]:
            e = exs[rec["id"]]
            ctx = tok(t.prompt(e), add_special_tokens=True).input_ids
            lls = []
            for c in t.labels(e):
                whole = tok(t.prompt(e) + " " + c, add_special_tokens=True).input_ids
                with torch.no_grad():
                    lp = model(torch.tensor([whole[:-1]])).logits[0].log_softmax(-1)
                cont = whole[len(ctx):]
                lls.append(sum(lp[len(ctx) - 1 + i, t_].item() for i, t_ in enumerate(cont)))
            assert rec["loglik"] == pytest.approx(lls, abs=1e-4)
            assert rec["pred"] == max(range(len(lls)), key=lls.__getitem__)
            assert rec["acc"] == float(rec["pred"] == e.answer)
            checked += 1
    assert checked >= 7


def test_results_json_is_reproducible_record(mirror, gemma_tiny, tmp_path):
    res = evaluate(gemma_tiny, ["pubmedqa"], output=tmp_path / "out", cache_path=tmp_path / "c.sqlite",
                   progress=False, bootstrap=200)
    data = json.loads(open(res[0]["path"]).read())
    assert data["schema_version"] == 1
    assert data["task"]["prompt_version"] == "1" and data["task"]["split"] == "test" and data["task"]["n"] == 2
    assert data["reproducibility"]["seed"] == 1234 and "torch" in data["reproducibility"]["packages"]
    assert data["model"]["hash"]
    eff = data["efficiency"]
    for k in ("parameters", "bytes", "peak_rss_bytes", "prefill_tok_s", "decode_tok_s",
              "latency_mean_s", "latency_p95_s", "threads", "cpu"):
        assert eff.get(k) is not None, k
    m = data["metrics"]
    assert set(m) >= {"acc", "acc_norm", "ece", "macro_f1"}
    lo, hi = m["acc"]["ci95"]
    assert lo <= m["acc"]["value"] <= hi
    assert len(data["examples"]) == 2


def test_batch_size_invariance(mirror, tmp_path):
    m, tok = tiny.model("llama"), tiny.tokenizer()
    a = evaluate(HFBackend(m, tok, batch_size=1), ["medmcqa"], bootstrap=0, measure_decode=False,
                 cache_path=tmp_path / "a.sqlite", progress=False)[0]
    b = evaluate(HFBackend(m, tok, batch_size=8), ["medmcqa"], bootstrap=0, measure_decode=False,
                 cache_path=tmp_path / "b.sqlite", progress=False)[0]
    for x, y in zip(a["examples"], b["examples"]):
        assert x["pred"] == y["pred"] and x["loglik"] == pytest.approx(y["loglik"], abs=1e-5)


def test_limit_is_a_fixed_seeded_subset(mirror):
    t = get_task("medmcqa")
    a = [e.id for e in t.examples(limit=3, seed=7)]
    assert a == [e.id for e in t.examples(limit=3, seed=7)] and len(a) == 3
    subsets = {tuple(e.id for e in t.examples(limit=3, seed=s)) for s in range(10)}
    assert len(subsets) > 1  # the seed matters
    order = [e.id for e in t.examples()]
    assert all(list(x) == sorted(x, key=order.index) for x in subsets)  # dataset order kept


def test_fewshot_prompt(mirror):
    t = get_task("medmcqa")
    ex = t.examples()
    t.prepare(ex, fewshot=1, seed=1)
    p = t.prompt(ex[0])
    assert p.startswith("Question: Train?\nChoices:\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\nQuestion: Question 0?")


def test_cot_parsing(mirror):
    t = get_task("medmcqa_cot")
    e = t.examples()[0]
    assert t.parse(e, "The nerve ... so the answer is B.\nAnswer: C") == 2
    assert t.parse(e, "I think (D) is right") == 3
    assert t.parse(e, "no idea") is None
    res = evaluate(DummyBackend(), [t], bootstrap=0, measure_decode=False, progress=False,
                   cache_path=None)[0]
    assert all(r["pred"] is not None for r in res["examples"])


def test_generation_tasks(mirror, gemma_tiny, tmp_path):
    res = evaluate(gemma_tiny, ["medquad", "medtext"], bootstrap=50, measure_decode=False,
                   cache_path=tmp_path / "c.sqlite", progress=False)
    for r in res:
        assert set(r["metrics"]) == {"rougeL", "semantic_sim", "length"}
        for rec in r["examples"]:
            assert 0 <= rec["rougeL"] <= 1 and -1 <= rec["semantic_sim"] <= 1
    # the scorer is right: a perfect answer scores 1, an unrelated one low
    from medslm.data.examples import OpenQA

    t = get_task("medquad")
    e = OpenQA(id="x", question="q", answer="Leukemia is a cancer of the blood.")
    good = t.score(e, ["Leukemia is a cancer of the blood."])
    bad = t.score(e, ["The weather in Paris is sunny today."])
    assert good["rougeL"] == pytest.approx(1.0) and good["semantic_sim"] > 0.99
    assert bad["rougeL"] < 0.2 and bad["semantic_sim"] < 0.3


def test_amega_semantic_judge(mirror, tmp_path):
    from medslm.data import load_dataset

    t = get_task("amega")
    e = next(x for x in load_dataset("amega") if x.meta["question_id"] == "1")
    rec = t.score(e, ["We should obtain an ECG now. Troponin should be measured. Rest."])
    assert rec["met"] == [True, True, False] and rec["score"] == pytest.approx(4 / 6)
    assert "approximate" in t.describe() and t.describe()["approximate"]


def test_classification_tasks(mirror, gemma_tiny, tmp_path):
    res = evaluate(gemma_tiny, ["mimic3_mortality", "drugcomb_synergy"], split="train", bootstrap=0,
                   measure_decode=False, cache_path=tmp_path / "c.sqlite", progress=False)
    for r in res:
        assert set(r["metrics"]) == {"auroc", "auprc", "acc"}
        for rec in r["examples"]:
            assert 0 < rec["p_yes"] < 1


def test_auroc_auprc_reference_values():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert auroc(y, s) == pytest.approx(0.75)
    assert auprc(y, s) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert macro_f1([0, 1, 2, 0], [0, 1, 1, 0], 3) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_medppl_matches_rolling_loglik(mirror, gemma_tiny, tmp_path):
    res = evaluate(gemma_tiny, ["medppl"], bootstrap=0, measure_decode=False,
                   cache_path=tmp_path / "c.sqlite", progress=False)[0]
    from medslm.backends.base import RollingRequest

    t = get_task("medppl")
    docs = t.examples()
    ll = gemma_tiny.loglikelihood_rolling([RollingRequest(d.text) for d in docs])
    words = sum(len(d.text.split()) for d in docs)
    assert res["metrics"]["word_perplexity"]["value"] == pytest.approx(math.exp(-sum(ll) / words), rel=1e-6)


RESUME_SCRIPT = r"""
import os, sys, time
sys.path.insert(0, {tests!r})
import tiny
from medslm.backends.hf import HFBackend
from medslm.evaluate.runner import evaluate
class Slow(HFBackend):
    def loglikelihood(self, reqs):
        out = super().loglikelihood(reqs)
        if os.environ.get("SLOW"):
            print("chunk", flush=True); time.sleep(0.4)
        return out
be = Slow(tiny.model("gpt2"), tiny.tokenizer())
import medslm.evaluate.runner as R
R.CHUNK["loglikelihood"] = 4
r = evaluate(be, ["medmcqa", "pubmedqa"], cache_path={cache!r}, output={out!r}, bootstrap=100,
             measure_decode=False, progress=False)
print("calls", be.calls if hasattr(be, "calls") else "")
"""


def test_kill_and_resume_gives_identical_results(mirror, tmp_path):
    script = tmp_path / "run.py"
    tests = os.path.dirname(__file__)
    script.write_text(RESUME_SCRIPT.format(tests=tests, cache=str(tmp_path / "c.sqlite"),
                                           out=str(tmp_path / "out")))
    ref_script = tmp_path / "ref.py"
    ref_script.write_text(RESUME_SCRIPT.format(tests=tests, cache=str(tmp_path / "ref.sqlite"),
                                               out=str(tmp_path / "ref")))
    env = dict(os.environ, SLOW="1")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    seen = 0
    while seen < 2:  # kill -9 after two chunks were committed
        line = p.stdout.readline()
        seen += line.startswith("chunk")
    p.kill()
    p.wait()
    import sqlite3

    done = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert 4 <= done < 5 * 4 + 6 * 3  # some, not all, requests finished
    env2 = dict(os.environ, SLOW="1")
    q = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env2)
    assert q.returncode == 0, q.stderr
    rerun_chunks = q.stdout.count("chunk")
    r = subprocess.run([sys.executable, str(ref_script)], capture_output=True, text=True,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    for task in ("medmcqa", "pubmedqa"):
        a = json.loads(next((tmp_path / "out").glob(f"*__{task}.json")).read_text())
        b = json.loads(next((tmp_path / "ref").glob(f"*__{task}.json")).read_text())
        assert a["metrics"] == b["metrics"] and a["examples"] == b["examples"]
    total = 5 * 4 + 6 * 3
    assert rerun_chunks * 4 < total  # the resumed run did not recompute everything
