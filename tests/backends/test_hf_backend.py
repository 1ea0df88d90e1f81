"""The hf backend against direct computation from the model's full logits, on every architecture."""

import pytest
from helpers import tiny

from medslm.backends.base import GenerateRequest, LoglikelihoodRequest, RollingRequest
from medslm.backends.base import cut_at_stop
from medslm.backends.hf import HFBackend

CONTEXTS = [
    "Question: Which vitamin deficiency causes scurvy?\nAnswer:",
    "Abstract: Patients with diabetes were randomized.\nQuestion: Does metformin help?\nAnswer:",
    "The patient presented with chest pain and",
    "Choices:\nA. aspirin\nB. heparin\nAnswer: ",  # trailing space moves to the continuation
]
CONTS = [" yes", " no", " maybe", " A", " B", " Vitamin C deficiency", " elevated troponin levels"]


def requests():
    return [LoglikelihoodRequest(c, k) for c in CONTEXTS for k in CONTS]


def direct(model, tok, add_bos, req):
    """lm-evaluation-harness's recipe, computed from full logits."""
    import torch

    ctx, cont = req.context, req.continuation
    n = len(ctx) - len(ctx.rstrip())
    if n:
        cont, ctx = ctx[-n:] + cont, ctx[:-n]
    whole = tok(ctx + cont, add_special_tokens=add_bos).input_ids
    c = tok(ctx, add_special_tokens=add_bos).input_ids
    k = whole[len(c):]
    ids = torch.tensor([(c + k)[:-1]])
    with torch.no_grad():
        logp = model(ids).logits[0].float().log_softmax(-1)
    logp = logp[len(c) - 1:]
    t = torch.tensor(k)
    return logp.gather(-1, t[:, None]).sum().item(), bool((logp.argmax(-1) == t).all())


@pytest.fixture(scope="module", params=tiny.ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def pair(arch):
    return tiny.model(arch), tiny.tokenizer()


@pytest.mark.parametrize("shared", [True, False])
def test_loglikelihood_equals_direct_computation(pair, arch, shared):
    model, tok = pair
    be = HFBackend(model, tok, batch_size=4, shared_context=shared)
    assert be.add_bos == (arch == "gemma3")
    got = be.loglikelihood(requests())
    for req, (ll, greedy) in zip(requests(), got):
        ref_ll, ref_greedy = direct(model, tok, be.add_bos, req)
        assert ll == pytest.approx(ref_ll, abs=1e-4), req
        assert greedy == ref_greedy


def test_shared_context_equals_pairwise(pair):
    model, tok = pair
    a = HFBackend(model, tok, shared_context=True).loglikelihood(requests())
    b = HFBackend(model, tok, shared_context=False).loglikelihood(requests())
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 1e-4


def test_batch_size_does_not_change_scores(pair):
    model, tok = pair
    reqs = requests()
    one = HFBackend(model, tok, batch_size=1).loglikelihood(reqs)
    eight = HFBackend(model, tok, batch_size=8).loglikelihood(reqs)
    assert max(abs(x[0] - y[0]) for x, y in zip(one, eight)) < 1e-5
    p1 = HFBackend(model, tok, batch_size=1, shared_context=False).loglikelihood(reqs)
    p8 = HFBackend(model, tok, batch_size=8, shared_context=False).loglikelihood(reqs)
    assert max(abs(x[0] - y[0]) for x, y in zip(p1, p8)) < 1e-5


def test_rolling_equals_direct(pair):
    import torch

    model, tok = pair
    be = HFBackend(model, tok, max_length=16)  # forces several windows
    text = " ".join(tiny.CORPUS[:3])
    got = be.loglikelihood_rolling([RollingRequest(text)])[0]
    toks = tok(text, add_special_tokens=False).input_ids
    seq = [be.prefix_token_id] + toks
    ref = 0.0
    for s in range(0, len(toks), 16):
        inp = torch.tensor([seq[s:s + 16]])
        tgt = torch.tensor(toks[s:s + 16])
        with torch.no_grad():
            lp = model(inp).logits[0].float().log_softmax(-1)[: len(tgt)]
        ref += lp.gather(-1, tgt[:, None]).sum().item()
    assert got == pytest.approx(ref, abs=1e-3)
    assert len(toks) > 32  # really used several windows


def test_generation_stops_at_limit_and_stop_sequences(pair):
    model, tok = pair
    be = HFBackend(model, tok)
    import torch

    free = be.generate([GenerateRequest("Question: scurvy?\nAnswer:", max_tokens=12)])[0]
    # a direct greedy loop of exactly 12 tokens gives the same text
    ids = tok("Question: scurvy?\nAnswer:", add_special_tokens=be.add_bos).input_ids
    new = []
    for _ in range(12):
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
        if nxt == tok.eos_token_id:
            break
        new.append(nxt)
    assert free == tok.decode(new, skip_special_tokens=True) and free
    # pick a stop string that occurs in the free generation: output must end right before it
    stop = free.strip()[len(free.strip()) // 2:][:3] or free[:1]
    cut = be.generate([GenerateRequest("Question: scurvy?\nAnswer:", until=(stop,), max_tokens=12)])[0]
    assert stop not in cut and free.startswith(cut)
    assert be.generate([GenerateRequest("Question: scurvy?\nAnswer:", max_tokens=12)])[0] == free


def test_cut_at_stop():
    assert cut_at_stop("abc\n\nQuestion: x", ["\n\n", "Question:"]) == "abc"
    assert cut_at_stop("abc", []) == "abc"


def test_describe(pair, arch):
    model, tok = pair
    d = HFBackend(model, tok).describe()
    assert d["parameters"] == sum(p.numel() for p in model.parameters())
    assert d["dtype"] == "float32" and d["device"] == "cpu" and d["threads"] >= 1


def test_backend_from_artifact_reference(tiny_artifacts):
    art = tiny_artifacts["llama"]
    be = HFBackend(str(art.path))
    d = be.describe()
    assert d["hash"] == art.meta.content_hash and d["bytes"] == art.meta.bytes
    assert be.loglikelihood([LoglikelihoodRequest("Answer:", " yes")])[0][0] < 0
