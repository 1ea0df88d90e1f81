"""The server on the embedded Gemma 3 270M GGUF through llama.cpp (integration).

Echoed prompt log-likelihoods equal the in-process llamacpp backend's with ``--scoring pairwise``
(what lm-evaluation-harness's ``local-completions`` model reads; llama.cpp's numerics depend on how
tokens are batched, so the shared-context default differs by up to ~0.01 nats), the chat fallback template has exactly one BOS, and at
temperature 0 the joined stream equals the non-streamed text.
"""

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")
pytestmark = pytest.mark.integration

from fastapi.testclient import TestClient  # noqa: E402

from medslm.backends.base import LoglikelihoodRequest  # noqa: E402


@pytest.fixture(scope="module")
def served():
    from medslm.serve.app import ServerConfig, create_app
    from medslm.serve.engine import Engine, Limits
    from medslm.serve.runtime import load_runtime

    rt = load_runtime("gemma3-270m", "llamacpp", threads=1, n_ctx=1024)
    app = create_app(Engine([rt], Limits(max_tokens_default=32)), ServerConfig(model_name="gemma3-270m"))
    return rt, TestClient(app)


def test_echo_loglikelihoods_match_the_in_process_backend(served):
    rt, c = served
    reqs = [("Question: Which vitamin deficiency causes scurvy?\nAnswer:", " vitamin C"),
            ("Question: Does metformin lower glucose?\nAnswer:", " yes"),
            ("Question: Does metformin lower glucose?\nAnswer:", " no"),
            ("Abstract: Sepsis admissions had higher mortality.\nQuestion: Is sepsis fatal?\nAnswer:", " maybe")]
    be = rt.backend
    be.shared_context = False  # context + continuation in one pass, as the server scores an echo
    want = be.loglikelihood([LoglikelihoodRequest(a, b) for a, b in reqs])
    be.shared_context = True
    for (ctx, cont), (ll, _) in zip(reqs, want):
        cids, tids = be.encode_pair(ctx, cont)
        r = c.post("/v1/completions", json={"prompt": cids + tids, "max_tokens": 1, "echo": True,
                                            "logprobs": 1, "temperature": 0}).json()
        lp = r["choices"][0]["logprobs"]
        assert lp["token_logprobs"][0] is None and len(lp["tokens"]) == len(cids) + len(tids) + 1
        got = sum(lp["token_logprobs"][len(cids):-1])
        assert abs(got - ll) <= 1e-3, (ctx, cont, got, ll)


def test_chat_has_one_bos_and_the_stream_equals_the_text(served):
    rt, c = served
    toks = c.post("/tokenize", json={"messages": [{"role": "user", "content": "What is scurvy?"}]}).json()["tokens"]
    assert toks.count(rt.bos_id) == 1 and toks[0] == rt.bos_id
    body = {"messages": [{"role": "system", "content": "You are a medical assistant."},
                         {"role": "user", "content": "What is scurvy?"}], "max_tokens": 24, "temperature": 0}
    plain = c.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        parts = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
    joined = "".join(p["choices"][0]["delta"].get("content", "") for p in parts)
    assert plain and joined == plain
