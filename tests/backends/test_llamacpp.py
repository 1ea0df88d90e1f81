"""The llamacpp backend on the embedded Gemma 3 270M GGUF (Q4_K_M), against the hf backend on the
same weights dequantized to fp32. llama.cpp multiplies with quantized activations (8-bit), so the two
agree within a tolerance rather than exactly, and its size depends on the CPU's kernels and the llama.cpp
build. Measured over these 24 requests, mean / max |d loglik| in nats: 0.108 / 0.407 (llama-cpp-python
0.3.16, AMX kernels, Xeon), 0.159 / 0.355 (0.3.36, AVX-512 kernels, same Xeon), max 0.424 (0.3.36 on
CI's machine); with the BOS token left out (the bug this test exists for) 6.88 / 16.8. So the test bounds
the mean at 0.3 and each request at 0.75 nats, and asks for the same predicted option on every question."""

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="pip install 'medslm[llamacpp]' (dev installs it)")
pytestmark = pytest.mark.integration

from medslm.backends.base import GenerateRequest, LoglikelihoodRequest, RollingRequest  # noqa: E402

QUESTIONS = [
    "Question: Which vitamin deficiency causes scurvy?\nAnswer:",
    "Question: Which organ produces insulin?\nAnswer:",
    "Question: What is the most common cause of community-acquired pneumonia?\nAnswer:",
    "Question: Which drug is a first-line treatment for type 2 diabetes?\nAnswer:",
]
OPTIONS = [" vitamin C", " the pancreas", " Streptococcus pneumoniae", " metformin", " yes", " no"]


@pytest.fixture(scope="module")
def backends():
    from medslm.backends.hf import HFBackend
    from medslm.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend("gemma3-270m", threads=1), HFBackend("gemma3-270m")


def test_loglikelihoods_agree_with_hf(backends):
    lc, hf = backends
    reqs = [LoglikelihoodRequest(q, o) for q in QUESTIONS for o in OPTIONS]
    a = lc.loglikelihood(reqs)
    b = hf.loglikelihood(reqs)
    diffs = [abs(x[0] - y[0]) for x, y in zip(a, b)]
    assert sum(diffs) / len(diffs) <= 0.3, diffs
    assert max(diffs) <= 0.75, diffs
    agree = 0
    for i in range(len(QUESTIONS)):
        la = [a[i * len(OPTIONS) + j][0] for j in range(len(OPTIONS))]
        lb = [b[i * len(OPTIONS) + j][0] for j in range(len(OPTIONS))]
        agree += la.index(max(la)) == lb.index(max(lb))
    assert agree == len(QUESTIONS)


def test_shared_context_equals_fresh_evaluation(backends):
    lc, _ = backends
    q = QUESTIONS[0]
    together = lc.loglikelihood([LoglikelihoodRequest(q, o) for o in OPTIONS])
    alone = [lc.loglikelihood([LoglikelihoodRequest(q, o)])[0] for o in OPTIONS]
    assert max(abs(x[0] - y[0]) for x, y in zip(together, alone)) < 1e-3


def test_scurvy_and_generation(backends):
    lc, _ = backends
    ctx = "Question: Which vitamin deficiency causes scurvy?\nAnswer: Vitamin"
    (c, _), (d, _) = lc.loglikelihood([LoglikelihoodRequest(ctx, " C"), LoglikelihoodRequest(ctx, " D")])
    assert c > d
    out = lc.generate([GenerateRequest(QUESTIONS[1], until=("\n",), max_tokens=12)])[0]
    assert out.strip() and "\n" not in out
    assert lc.loglikelihood_rolling([RollingRequest("Insulin is produced by the pancreas.")])[0] < 0
    from medslm.backends.llamacpp import repack_weights

    assert lc.describe()["repack"] is repack_weights()  # the kernels the numbers came from are recorded


def test_refuses_more_threads_than_cores():
    import os

    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.errors import MedslmError

    with pytest.raises(MedslmError, match="cores this process may use"):
        LlamaCppBackend("gemma3-270m", threads=(os.cpu_count() or 1) + 4)


def test_scoring_in_row_chunks_equals_scoring_at_once():
    """target_logprobs bounds its temporaries to a few rows; the sums and the greedy flag do not
    depend on the chunk size, the numpy path (llama.cpp's logits) equals the torch path (the hf
    backend's), and float32's log-sum-exp stays within 1e-4 nats of float64's over 37 positions."""
    import numpy as np
    import torch

    from medslm.backends.base import target_logprobs

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(37, 500)).astype(np.float32)
    targets = rng.integers(0, 500, size=37).tolist()
    whole = target_logprobs(logits, targets, rows=10_000)
    for rows in (1, 5, 64):
        part = target_logprobs(logits, targets, rows=rows)
        assert part[0] == pytest.approx(whole[0], abs=1e-9) and part[1] == whole[1] is False
    greedy = logits.argmax(-1).tolist()
    assert target_logprobs(logits, greedy, rows=4)[1] is True
    t = target_logprobs(torch.from_numpy(logits), targets)
    assert t[0] == pytest.approx(whole[0], abs=1e-9) and t[1] is False
    assert target_logprobs(torch.from_numpy(logits), greedy)[1] is True
    lp = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    assert whole[0] == pytest.approx(lp[np.arange(37), targets].sum(), abs=1e-4)
