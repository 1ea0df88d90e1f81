"""Evaluation: every task family on fixtures, exactness vs the logits, resume, batch invariance."""

import json
import math
import subprocess
import sys

import helpers
import pytest
from helpers import tiny

from medslm.backends.hf import HFBackend
from medslm.evaluate.runner import evaluate
from medslm.tasks import get_task


@pytest.fixture(scope="module")
def gemma_tiny():
    return HFBackend(tiny.model("gemma3"), tiny.tokenizer(), batch_size=4)


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
from helpers import tiny
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
    script.write_text(RESUME_SCRIPT.format(cache=str(tmp_path / "c.sqlite"),
                                           out=str(tmp_path / "out")))
    ref_script = tmp_path / "ref.py"
    ref_script.write_text(RESUME_SCRIPT.format(cache=str(tmp_path / "ref.sqlite"),
                                               out=str(tmp_path / "ref")))
    env = helpers.env(SLOW="1")
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
    env2 = helpers.env(SLOW="1")
    q = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env2)
    assert q.returncode == 0, q.stderr
    rerun_chunks = q.stdout.count("chunk")
    r = subprocess.run([sys.executable, str(ref_script)], capture_output=True, text=True,
                       env=helpers.env())
    assert r.returncode == 0, r.stderr
    for task in ("medmcqa", "pubmedqa"):
        a = json.loads(next((tmp_path / "out").glob(f"*__{task}.json")).read_text())
        b = json.loads(next((tmp_path / "ref").glob(f"*__{task}.json")).read_text())
        assert a["metrics"] == b["metrics"] and a["examples"] == b["examples"]
    total = 5 * 4 + 6 * 3
    assert rerun_chunks * 4 < total  # the resumed run did not recompute everything


def test_a_backend_sets_how_many_requests_reach_it_at_once(tmp_path):
    """A batching engine (vLLM) decodes the requests of one call together: the runner hands it its
    ``request_chunk`` (a cache commit each), other backends the runner's default of 4 generations."""
    from medslm.evaluate.cache import RequestCache
    from medslm.evaluate.runner import CHUNK, run_requests
    from medslm.requests import GenerateRequest

    class Recorder(HFBackend):
        def generate(self, reqs):
            self.sizes.append(len(reqs))
            return [f"answer {r.context}" for r in reqs]

    reqs = [GenerateRequest(f"q{i}", until=("\n",), max_tokens=4) for i in range(25)]
    plain = Recorder(tiny.model("gpt2"), tiny.tokenizer())
    plain.sizes = []
    run_requests(plain, reqs, None, progress=False)
    assert plain.sizes == [CHUNK["generate"]] * 6 + [1]
    batched = Recorder(tiny.model("gpt2"), tiny.tokenizer())
    batched.sizes, batched.request_chunk = [], {"generate": 10}
    cache = RequestCache(tmp_path / "c.sqlite")
    answers, _, fresh = run_requests(batched, reqs, cache, progress=False)
    assert batched.sizes == [10, 10, 5] and answers == [f"answer q{i}" for i in range(25)] and all(fresh)
    again = Recorder(tiny.model("gpt2"), tiny.tokenizer())
    again.sizes, again.request_chunk = [], {"generate": 10}
    assert run_requests(again, reqs, cache, progress=False)[0] == answers and again.sizes == []
