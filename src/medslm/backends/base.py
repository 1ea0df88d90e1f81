"""The one small interface every runtime implements.

A backend answers three batch calls over tiny request dataclasses and describes itself:

- ``loglikelihood([LoglikelihoodRequest]) -> [(logprob, is_greedy)]``: log P(continuation | context)
  summed over the continuation's tokens, and whether greedy decoding would produce it.
- ``loglikelihood_rolling([RollingRequest]) -> [logprob]``: log P(text), the whole text scored with
  disjoint windows of the model's context length (perplexity).
- ``generate([GenerateRequest]) -> [text]``: greedy continuation, cut at the first stop sequence.
- ``describe() -> dict``: parameters, bytes, dtype, device, threads.

Results come back in input order; backends own batching and caching.

Example::

    >>> be = get_backend("hf")(model="gemma3-270m")
    >>> be.loglikelihood([LoglikelihoodRequest("Answer:", " yes"), LoglikelihoodRequest("Answer:", " no")])
    [(-1.2, True), (-2.3, False)]
"""

from __future__ import annotations

import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable

from medslm.registry import Registry
from medslm.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest

__all__ = ["BACKENDS", "Backend", "GenerateRequest", "LoglikelihoodRequest", "RollingRequest", "cut_at_stop",
           "get_backend", "log_softmax", "target_logprobs", "wants_bos"]


def wants_bos(model_type: str) -> bool:
    """lm-evaluation-harness's rule, used for scoring, generation, training and serving alike: a BOS
    token before the text for the Gemma family (its models degrade without one), none otherwise."""
    return "gemma" in str(model_type or "").lower()


def cut_at_stop(text: str, until: Iterable[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in until or ():
        if s:
            j = text.find(s)
            if j != -1:
                cut = min(cut, j)
    return text[:cut]


def log_softmax(x):
    """Row-wise log-softmax of a float array (numpy, float32): the serving path's per-token scores."""
    import numpy as np

    x = x.astype(np.float32, copy=False)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def target_logprobs(logits, targets: list[int], rows: int = 64) -> tuple[float, bool]:
    """Sum of log P(target) over positions, and whether every target is the argmax.

    ``logits``: (positions, vocabulary), a torch tensor or a numpy array (llama.cpp's rows, read
    without a copy), computed in float32 as the hf backend always has, ``rows`` positions at a time
    (a 4,096-token window over Gemma's 262k vocabulary is 4.3 GB). The numpy rows once went through
    numpy in float64: 1.75 ms a token single-threaded, most of llama.cpp's perplexity time; torch's
    float32 log-sum-exp takes 0.44 ms on 2 threads and moves a 512-token sum by 1e-4 nats."""
    import torch

    if not hasattr(logits, "gather"):  # numpy
        logits = torch.from_numpy(logits)
    ll, greedy = 0.0, True
    for i in range(0, len(targets), rows):
        lg = logits[i:i + rows].float()
        t = torch.tensor(targets[i:i + rows], device=lg.device)
        # each position's log-probability in float32, their sum in float64 (so it is the same for
        # any ``rows``)
        ll += float((lg.gather(-1, t[:, None])[:, 0] - torch.logsumexp(lg, -1)).double().sum().item())
        greedy = greedy and bool((lg.argmax(-1) == t).all().item())
    return ll, greedy


class Backend(ABC):
    """The contract (see the module doc). What every backend shares lives here: the pair encoding
    and BOS rule of lm-evaluation-harness, stop strings, log-probability scoring. A backend that
    serves (``medslm serve``) also implements the token-level calls below."""

    name: str = "base"
    add_bos: bool = False
    prefix_token_id: int | None = None  # what an empty context is conditioned on (BOS, else EOS)
    # requests of one kind the evaluation runner hands over at once ({"generate": 64}; a kind not
    # named keeps the runner's default): a batching engine (vLLM) decodes a chunk's requests
    # together, so its chunk is its batch; each chunk is committed to the request cache when done
    request_chunk: dict[str, int] = {}

    @abstractmethod
    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]: ...

    @abstractmethod
    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]: ...

    @abstractmethod
    def generate(self, requests: list[GenerateRequest]) -> list[str]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None:
        """Release engine processes and threads before the interpreter exits (a no-op for in-process
        backends)."""

    def cache_key(self) -> str:
        """What, besides the request, determines an answer: used to key the on-disk request cache."""
        d = self.describe()
        return f"{self.name}|{d.get('hash', '')}|{d.get('dtype', '')}|{d.get('scoring', '')}"

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared by every backend
    def tokens(self, text: str, bos: bool) -> list[int]:
        """Token ids of ``text`` as scored (``bos``: with the model's BOS first)."""
        raise NotImplementedError

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-evaluation-harness's ``_encode_pair``: trailing spaces of the context move to the
        continuation; the continuation's tokens are those of context + continuation after the
        context's own; an empty context is the prefix token alone."""
        n = len(context) - len(context.rstrip())
        if n:
            continuation, context = context[-n:] + continuation, context[:-n]
        if not context:
            return [self.prefix_token_id], self.tokens(continuation, False)
        whole = self.tokens(context + continuation, self.add_bos)
        ctx = self.tokens(context, self.add_bos)
        return ctx, whole[len(ctx):]

    # ------------------------------------------------------------------ token-level (serving)
    # A serving backend also sets n_ctx, bos_id, bos_text, eos_ids, chat_template, special_tokens
    # and vocab_size, and answers these calls for one sequence at a time:
    def tokenize(self, text: str, *, bos: bool | None = None, special: bool = False) -> list[int]:
        raise NotImplementedError(f"the {self.name} backend does not serve")

    def detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError(f"the {self.name} backend does not serve")

    def token_text(self, i: int) -> str:
        return self.detokenize([i])

    def forward(self, ids: list[int], keep: int, all_logits: bool = False):
        """Raw logits (float32 numpy, ``[n, vocab]``) after the first ``keep`` tokens of ``ids``,
        reusing the KV cache of the previous call when ``ids[:keep]`` is what it last saw; only the
        last row unless ``all_logits``."""
        raise NotImplementedError(f"the {self.name} backend does not serve")


# every other module of this package is a backend named as the module, its class at ``BACKEND``;
# found by file name, so listing backends imports none of them (torch, llama.cpp)
BACKENDS = Registry("backend")
for _m in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _m.name != "base" and not _m.name.startswith("_"):
        BACKENDS.add(_m.name, f"medslm.backends.{_m.name}:BACKEND")


def get_backend(name: str) -> type[Backend]:
    return BACKENDS.get(name)


def from_ref(ref: str, **options: Any) -> Backend:
    """The backend a judge or teacher reference names: ``URL[#MODEL]`` (an OpenAI-compatible
    server), ``BACKEND:REF`` (e.g. ``llamacpp:teacher.gguf``), or a model reference for ``hf``."""
    if ref.startswith(("http://", "https://")):
        url, _, model = ref.partition("#")
        return BACKENDS.get("openai")(model or "default", base_url=url, **options)
    name, sep, rest = ref.partition(":")
    name, ref = (name, rest) if sep and name in BACKENDS else ("hf", ref)
    return BACKENDS.get(name)(ref, **options)


def is_served(ref: str) -> bool:
    """Whether ``ref`` names a model behind a backend other than in-process transformers."""
    name, sep, _ = ref.partition(":")
    return ref.startswith(("http://", "https://")) or (bool(sep) and name in BACKENDS and name != "hf")
