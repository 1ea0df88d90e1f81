"""A deterministic fake backend for testing the evaluator without a model.

Scores are derived from a hash of the request, so they are stable across runs and processes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from medslm.backends.base import Backend, GenerateRequest, LoglikelihoodRequest, RollingRequest, cut_at_stop


def _h(*parts: str) -> float:
    d = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(d[:8], "big") / 2**64


class DummyBackend(Backend):
    name = "dummy"

    def __init__(self, model: str = "dummy", **_: Any):
        self.model = model
        self.calls = 0

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        self.calls += len(requests)
        return [(-10 * _h(r.context, r.continuation), False) for r in requests]

    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]:
        self.calls += len(requests)
        return [-2.0 * len(r.text.split()) * (0.5 + _h(r.text)) for r in requests]

    def generate(self, requests: list[GenerateRequest]) -> list[str]:
        self.calls += len(requests)
        return [cut_at_stop(f"Answer: {'ABCD'[int(_h(r.context) * 4)]}", r.until) for r in requests]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def describe(self) -> dict[str, Any]:
        return {"backend": "dummy", "model": self.model, "hash": "dummy", "parameters": 0,
                "bytes": 0, "dtype": "none", "device": "cpu", "threads": 1}


BACKEND = DummyBackend
