"""Cost next to accuracy: size, memory, prefill and decode speed, latency, hardware."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

from medslm.backends.base import GenerateRequest

DECODE_PROMPT = "Question: What are the first-line treatments for type 2 diabetes mellitus?\nAnswer:"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process image. On Linux VmHWM, not ru_maxrss: the latter
    carries over the parent's peak through fork + exec, so a child evaluating a small model
    started by a parent holding a big one would report the parent's memory."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if platform.system() == "Darwin" else 1024)


def decode_speed(backend, tokens: int = 32) -> dict[str, float]:
    """Greedy decode of ``tokens`` tokens from a fixed prompt; tokens/s of the whole generation."""
    t = time.perf_counter()
    text = backend.generate([GenerateRequest(DECODE_PROMPT, max_tokens=tokens)])[0]
    dt = time.perf_counter() - t
    n = max(1, backend.count_tokens(text)) if hasattr(backend, "count_tokens") else tokens
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
