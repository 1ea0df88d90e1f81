"""Cost next to accuracy: size, memory, prefill and decode speed, latency, hardware."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from medslm.requests import GenerateRequest

DECODE_PROMPT = "Question: What are the first-line treatments for type 2 diabetes mellitus?\nAnswer:"


def decode_speed(backend, tokens: int = 32) -> dict[str, float]:
    """Greedy decode of ``tokens`` tokens from a fixed prompt; tokens/s of the whole generation."""
    t = time.perf_counter()
    text = backend.generate([GenerateRequest(DECODE_PROMPT, max_tokens=tokens)])[0]
    dt = time.perf_counter() - t
    try:
        n = max(1, backend.count_tokens(text))
    except NotImplementedError:  # a remote backend: the requested count
        n = tokens
    return {"decode_tokens": n, "decode_seconds": round(dt, 3), "decode_tok_s": round(n / dt, 2)}


def hardware(backend) -> dict[str, Any]:
    d = backend.describe()
    out = {"cpu": d.get("cpu"), "gpu": d.get("gpu"), "threads": d.get("threads"),
           "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    return out
