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

from abc import ABC, abstractmethod
from typing import Any

from medslm.registry import Registry
from medslm.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest

__all__ = ["BACKENDS", "Backend", "GenerateRequest", "LoglikelihoodRequest", "RollingRequest", "get_backend"]


class Backend(ABC):
    name: str = "base"

    @abstractmethod
    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]: ...

    @abstractmethod
    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]: ...

    @abstractmethod
    def generate(self, requests: list[GenerateRequest]) -> list[str]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def cache_key(self) -> str:
        """What, besides the request, determines an answer: used to key the on-disk request cache."""
        d = self.describe()
        return f"{self.name}|{d.get('hash', '')}|{d.get('dtype', '')}|{d.get('scoring', '')}"

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError


BACKENDS = Registry("backend")
BACKENDS.add("hf", "medslm.backends.hf:HFBackend")
BACKENDS.add("llamacpp", "medslm.backends.llamacpp:LlamaCppBackend")
BACKENDS.add("dummy", "medslm.backends.dummy:DummyBackend")


def get_backend(name: str) -> type[Backend]:
    return BACKENDS.get(name)
