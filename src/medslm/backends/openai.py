"""The ``openai`` backend: any OpenAI-compatible server (vLLM's, llama.cpp's, ``medslm serve``, a
hosted one) as a model to evaluate, judge with, or distill from.

    medslm eval --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME --tasks pubmedqa

- generation: ``/completions`` with the task's prompt, greedy (temperature 0), the stop strings
  sent (at most 4, as the API allows) and applied again here;
- log-likelihoods: ``/completions`` with ``echo`` and ``logprobs=1`` on context + continuation (as
  lm-evaluation-harness's ``local-completions`` does), ``max_tokens=1``; the continuation's tokens
  are the last prompt tokens whose text covers it (the prompt part ends ``usage.completion_tokens``
  before the end), its greedy flag from each position's top alternative. A server that returns no
  prompt log-probabilities gets an error naming it;
- the key from ``$MEDSLM_OPENAI_API_KEY`` (else ``$OPENAI_API_KEY``), the URL from ``--base-url``
  (else ``$MEDSLM_OPENAI_BASE_URL`` / ``$OPENAI_BASE_URL``);
- retries with backoff on 408/409/429/5xx honouring ``Retry-After`` (the official ``openai``
  client's, ``max_retries``), then an error naming the server, the status and what to do;
  ``concurrency`` requests in flight at most.

The client is the ``openai`` package (``pip install 'medslm[openai]'``): its retry and timeout
handling is what every OpenAI-compatible server is tested against.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medslm.backends.base import Backend, GenerateRequest, LoglikelihoodRequest, RollingRequest, cut_at_stop
from medslm.errors import MedslmError

KEY_ENV = ("MEDSLM_OPENAI_API_KEY", "OPENAI_API_KEY")
URL_ENV = ("MEDSLM_OPENAI_BASE_URL", "OPENAI_BASE_URL")


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, concurrency: int = 4, max_retries: int = 4,
                 timeout: float = 120.0, **_: Any):
        try:
            import openai
        except ImportError as e:
            raise MedslmError("the openai backend needs the openai client: pip install 'medslm[openai]'") from e
        url = base_url or next((os.environ[k] for k in URL_ENV if os.environ.get(k)), None)
        if not url:
            raise MedslmError("--backend openai needs the server's URL: --base-url http://HOST:PORT/v1 (or set "
                              f"{URL_ENV[0]})")
        if not url.startswith(("http://", "https://")):
            raise MedslmError(f"--base-url {url!r}: an http(s) URL such as http://127.0.0.1:8000/v1")
        if concurrency < 1:
            raise MedslmError(f"concurrency={concurrency}: at least 1 request in flight")
        key = next((os.environ[k] for k in KEY_ENV if os.environ.get(k)), None) or "none"
        self.model, self.url, self.concurrency = str(model), url.rstrip("/"), concurrency
        # as many requests per call as may be in flight (the runner's default of 4 would cap --concurrency)
        self.request_chunk = {"generate": max(4, concurrency), "loglikelihood_rolling": max(4, concurrency)}
        self._openai = openai
        self.client = openai.OpenAI(base_url=self.url, api_key=key, max_retries=max_retries, timeout=timeout)

    # ------------------------------------------------------------------ requests
    def _call(self, **kw):
        o = self._openai
        try:
            return self.client.completions.create(model=self.model, **kw)
        except o.APIStatusError as e:
            what = {401: "the key was refused: set MEDSLM_OPENAI_API_KEY", 403: "the key was refused",
                    404: f"no such model or endpoint: check --model {self.model} and --base-url",
                    429: "rate limited after every retry: lower the concurrency or retry later"}
            hint = what.get(e.status_code, "the server failed after every retry" if e.status_code >= 500
                            else "the server refused the request")
            raise MedslmError(f"{self.url}: HTTP {e.status_code} ({hint}): {_message(e)}") from None
        except o.APIConnectionError as e:
            raise MedslmError(f"{self.url}: cannot connect ({e.__class__.__name__}); is the server running "
                              "and --base-url right?") from None

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            return list(ex.map(fn, items))

    def _prompt_logprobs(self, prompt: str) -> tuple[list[str], list[float | None], list[dict | None]]:
        """The prompt's tokens, their log-probabilities and top alternatives (echo)."""
        r = self._call(prompt=prompt, max_tokens=1, echo=True, logprobs=1, temperature=0)
        ch = r.choices[0]
        lp = ch.logprobs
        if lp is None or not lp.tokens or lp.token_logprobs is None:
            raise MedslmError(f"{self.url}: the server returned no prompt log-probabilities (completions with "
                              "echo and logprobs); log-likelihood tasks need them: use a generation task, or a "
                              "server that scores prompts (vLLM, llama.cpp's server, medslm serve)")
        gen = int(getattr(r.usage, "completion_tokens", 0) or 0) if r.usage else 0
        n = len(lp.tokens) - gen
        return list(lp.tokens[:n]), list(lp.token_logprobs[:n]), list((lp.top_logprobs or [None] * n)[:n])

    def prompt_top_logprobs(self, texts: list[str], k: int) -> list[tuple[list[int], list[dict[int, float] | None]]]:
        """For each text: its token ids as the server tokenizes it, and at each token the server's
        ``k`` most likely tokens there, ``{id: log-probability}`` (None at the first). Token ids come
        from vLLM's ``return_tokens_as_token_ids`` (vLLM's server, ``medslm serve``); text names
        would be ambiguous wherever two tokens decode alike."""
        if not 1 <= k <= 20:
            raise MedslmError(f"top-k log-probabilities: k={k}; the OpenAI API allows 1..20")

        def tid(name: str) -> int:
            if not name.startswith("token_id:"):
                raise MedslmError(f"{self.url}: the server names tokens by text ({name!r}), not by id; top-k "
                                  "targets need return_tokens_as_token_ids (vLLM's server, medslm serve): "
                                  "use such a server, or distil with mode: sequence")
            return int(name.split(":", 1)[1])

        def one(text: str):
            r = self._call(prompt=text, max_tokens=1, echo=True, logprobs=k, temperature=0,
                           extra_body={"return_tokens_as_token_ids": True})
            lp = r.choices[0].logprobs
            if lp is None or not lp.tokens or not lp.top_logprobs:
                raise MedslmError(f"{self.url}: the server returned no prompt top log-probabilities (completions "
                                  "with echo and logprobs=K); top-k distillation needs them")
            gen = int(getattr(r.usage, "completion_tokens", 0) or 0) if r.usage else 0
            n = len(lp.tokens) - gen
            tops = [None if t is None else {tid(a): float(b) for a, b in t.items()} for t in lp.top_logprobs[:n]]
            return [tid(t) for t in lp.tokens[:n]], tops

        return self._map(one, texts)

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        def one(r: LoglikelihoodRequest):
            ctx, cont = r.context, r.continuation
            k = len(ctx) - len(ctx.rstrip())  # trailing spaces belong to the continuation (lm-eval)
            if k:
                ctx, cont = ctx[:-k], ctx[-k:] + cont
            toks, lps, tops = self._prompt_logprobs(ctx + cont)
            covered, i = 0, len(toks)
            while i > 0 and covered < len(cont):
                i -= 1
                covered += len(toks[i])
            if i == 0 or any(x is None for x in lps[i:]):
                raise MedslmError(f"{self.url}: the continuation {cont[:40]!r} has no scored tokens (the "
                                  "server's token texts do not cover it)")
            greedy = all(t is None or not t or max(t, key=t.get) == tok for tok, t in zip(toks[i:], tops[i:]))
            return float(sum(lps[i:])), bool(greedy)

        return self._map(one, requests)

    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]:
        def one(r: RollingRequest):
            _, lps, _ = self._prompt_logprobs(r.text)
            return float(sum(x for x in lps if x is not None))

        return self._map(one, requests)

    def generate(self, requests: list[GenerateRequest]) -> list[str]:
        def one(r: GenerateRequest):
            stop = [s for s in (r.until or []) if s][:4] or None
            out = self._call(prompt=r.context, max_tokens=r.max_tokens, temperature=0, stop=stop)
            return cut_at_stop(out.choices[0].text or "", r.until)

        return self._map(one, requests)

    def describe(self) -> dict[str, Any]:
        # the served model's weights are not visible from here: the hash names the server and model
        return {"backend": "openai", "model": self.model, "base_url": self.url,
                "hash": f"openai:{self.url}/{self.model}", "parameters": None, "bytes": None,
                "dtype": "server", "device": "remote", "threads": None, "concurrency": self.concurrency}


def _message(e) -> str:
    try:
        body = e.response.json()
        msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return str(msg or body)[:300]
    except Exception:
        return str(e)[:300]


BACKEND = OpenAIBackend
