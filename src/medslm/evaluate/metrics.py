"""Bootstrap confidence intervals for any aggregate (decomposable or not: macro-F1, AUROC, ppl)."""

from __future__ import annotations

import math
import random
from typing import Callable


def bootstrap_ci(records: list, aggregate: Callable[[list], dict], n: int = 1000, seed: int = 1234,
                 alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap: resample examples with replacement ``n`` times, re-aggregate."""
    if len(records) < 2:
        return {}
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n):
        res = aggregate([records[rng.randrange(len(records))] for _ in records])
        for k, v in res.items():
            if isinstance(v, (int, float)) and not math.isnan(v):
                samples.setdefault(k, []).append(float(v))
    out = {}
    for k, vals in samples.items():
        vals.sort()
        lo = vals[int(alpha / 2 * (len(vals) - 1))]
        hi = vals[int((1 - alpha / 2) * (len(vals) - 1))]
        out[k] = (lo, hi)
    return out
