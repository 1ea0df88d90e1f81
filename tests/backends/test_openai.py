"""The openai backend: parity with in-process llama.cpp through ``medslm serve`` on loopback,
retries on 429/5xx (then a clear error), a server without prompt log-probabilities, bad flags."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import pytest
from helpers import tiny

pytest.importorskip("openai")

from medslm.errors import MedslmError  # noqa: E402
from medslm.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest  # noqa: E402

REQS = [LoglikelihoodRequest(context="Question: Which vitamin deficiency causes scurvy? Answer:",
                             continuation=" Vitamin C."),
        LoglikelihoodRequest(context="The patient presented with chest pain,", continuation=" dyspnea"),
        LoglikelihoodRequest(context="Hypertension is treated with ", continuation="ACE inhibitors")]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("fastapi")
    from medslm.export.gguf import export_gguf

    d = tmp_path_factory.mktemp("oa")
    art = tiny.save_artifact("gemma3", d / "base", spm=True)
    return str(export_gguf(art, d / "tiny-f16.gguf", "f16", progress=False))


def test_scores_through_medslm_serve_equal_in_process_llamacpp(tiny_gguf, monkeypatch):
    """The same GGUF scored by llama.cpp in this process (each context + continuation in one pass)
    and through medslm serve's completions (echo + logprobs) by the openai backend."""
    from helpers.serving import make_app, running

    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.backends.openai import OpenAIBackend
    from medslm.serve.runtime import load_runtime

    monkeypatch.setenv("MEDSLM_OPENAI_API_KEY", "k" * 24)
    local = LlamaCppBackend(tiny_gguf, threads=1, shared_context=False)
    want = local.loglikelihood(REQS)
    want_roll = local.loglikelihood_rolling([RollingRequest(tiny.CORPUS[2])])
    want_gen = local.generate([GenerateRequest("Question: Which vitamin", max_tokens=8, until=["\n"])])
    with running(make_app(load_runtime(tiny_gguf, "llamacpp", threads=1), keys=["k" * 24], max_tokens=64)) as base:
        be = OpenAIBackend("test-model", base_url=base + "/v1", concurrency=2)
        got = be.loglikelihood(REQS)
        roll = be.loglikelihood_rolling([RollingRequest(tiny.CORPUS[2])])
        gen = be.generate([GenerateRequest("Question: Which vitamin", max_tokens=8, until=["\n"])])
    for (a, ga), (b, gb) in zip(got, want):
        assert abs(a - b) < 1e-3 and ga == gb, (got, want)
    assert abs(roll[0] - want_roll[0]) < 1e-2
    # a random model emits stray byte tokens: the server writes an invalid UTF-8 byte as U+FFFD and
    # counts it against max_tokens, llama-cpp-python's detokenizer drops it; the greedy text agrees
    g = gen[0].replace("\ufffd", "")
    assert len(g) >= 8 and want_gen[0].startswith(g), (gen, want_gen)


class _Fake(http.server.BaseHTTPRequestHandler):
    """Answers /v1/completions from a script of (status, headers, body) replies."""
    script: list = []
    calls = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        cls = type(self)
        status, headers, body = cls.script[min(cls.calls, len(cls.script) - 1)]
        cls.calls += 1
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def _completion(text="ok", logprobs=None):
    return {"id": "c", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": logprobs}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


@pytest.fixture
def fake():
    handler = type("H", (_Fake,), {"script": [], "calls": 0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield handler, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_429_and_5xx_are_retried_then_reported(fake):
    from medslm.backends.openai import OpenAIBackend

    h, url = fake
    h.script = [(429, {"Retry-After": "0"}, {"error": {"message": "slow down"}}),
                (503, {"Retry-After": "0"}, {"error": {"message": "busy"}}),
                (200, {}, _completion(" yes\nmore"))]
    be = OpenAIBackend("m", base_url=url, max_retries=3, concurrency=1)
    assert be.generate([GenerateRequest("Q:", max_tokens=4, until=["\n"])]) == [" yes"]
    assert h.calls == 3  # two refusals, then the answer
    h.script, h.calls = [(503, {"Retry-After": "0"}, {"error": {"message": "overloaded"}})], 0
    with pytest.raises(MedslmError, match=r"127\.0\.0\.1.*HTTP 503 \(the server failed after every retry\): overloaded"):
        OpenAIBackend("m", base_url=url, max_retries=2).generate([GenerateRequest("Q:", max_tokens=4)])
    assert h.calls == 3  # the first try and two retries


def test_a_server_without_prompt_logprobs_gets_a_clear_error(fake):
    from medslm.backends.openai import OpenAIBackend

    h, url = fake
    h.script = [(200, {}, _completion())]  # echo ignored: no logprobs
    with pytest.raises(MedslmError, match="returned no prompt log-probabilities .* generation task"):
        OpenAIBackend("m", base_url=url).loglikelihood(REQS[:1])


def test_continuation_tokens_are_the_ones_covering_it(fake):
    from medslm.backends.openai import OpenAIBackend

    h, url = fake
    lp = {"tokens": ["<bos>", "Answer", ":", " ye", "s", "!"], "token_logprobs": [None, -1.0, -0.5, -2.0, -0.25, -3.0],
          "top_logprobs": [None, {"Answer": -1.0}, {":": -0.5}, {" no": -1.0}, {"s": -0.25}, {"!": -3.0}],
          "text_offset": [0, 5, 11, 12, 15, 16]}
    h.script = [(200, {}, _completion("!", lp))]  # the last token is the generated one
    (ll, greedy), = OpenAIBackend("m", base_url=url).loglikelihood(
        [LoglikelihoodRequest(context="Answer: ", continuation="yes")])  # the trailing space moves over
    assert ll == pytest.approx(-2.25) and greedy is False  # " ye" was not the top token


def test_flags_are_checked(tmp_path):
    from helpers import env

    p = subprocess.run([sys.executable, "-m", "medslm", "eval", "--backend", "openai", "--model", "m",
                        "--tasks", "pubmedqa"], capture_output=True, text=True, env=env(MEDSLM_OPENAI_BASE_URL=""))
    assert p.returncode != 0 and "--base-url http://HOST:PORT/v1" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "medslm", "eval", "--backend", "hf", "--base-url", "http://x/v1",
                        "--tasks", "pubmedqa"], capture_output=True, text=True, env=env())
    assert p.returncode != 0 and "--base-url applies to --backend openai" in p.stderr


def test_an_amega_judge_can_be_a_served_model(fake):
    """--judge URL#MODEL: the rubric's True/False log-likelihoods come from the server."""
    from medslm.tasks import get_task

    h, url = fake
    lp = {"tokens": ["Met", ":", " True", "!"], "token_logprobs": [None, -0.1, -0.2, -1.0],
          "top_logprobs": [None, {":": -0.1}, {" True": -0.2}, {"!": -1.0}], "text_offset": [0, 3, 4, 9]}
    h.script = [(200, {}, _completion("!", lp))]
    task = get_task("amega", judge=url + "#judge-model")
    be = task.judge_backend()
    assert be.name == "openai" and be.model == "judge-model" and be.url == url
    assert be.loglikelihood([LoglikelihoodRequest("Met:", " True")]) == [(-0.2, True)]
    assert h.calls == 1


def test_the_runner_keeps_concurrency_requests_in_flight(fake):
    """The evaluation runner hands the backend ``concurrency`` generations per call (its default
    chunk of 4 capped --concurrency 8 at 4 requests in flight)."""
    import time

    from medslm.backends.openai import OpenAIBackend
    from medslm.evaluate.runner import run_requests

    h, url = fake
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow_post(self, _orig=h.do_POST):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        _orig(self)

    h.do_POST = slow_post
    h.script = [(200, {}, _completion(" yes"))]
    be = OpenAIBackend("m", base_url=url, concurrency=8, max_retries=0)
    answers, _, _ = run_requests(be, [GenerateRequest(f"Q{i}:", max_tokens=2) for i in range(16)], None,
                                 progress=False)
    assert answers == [" yes"] * 16 and h.calls == 16
    assert state["peak"] == 8
