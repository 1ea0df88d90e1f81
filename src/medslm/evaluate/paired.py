"""Paired comparisons of two models on the same items: is a difference real or within noise?

Two results of one task on the same examples (same ids: same split, limit and seed) are compared
item by item, never by their point estimates alone:

- a per-item 0/1 metric (accuracy): the exact two-sided McNemar test on the discordant items
  (``b`` right only for the first model, ``c`` right only for the second) and a paired bootstrap
  CI of the difference in accuracy;
- any other metric (perplexity, macro-F1, ROUGE): a paired percentile bootstrap of the difference
  of the task's own aggregate, the items resampled together for both models.

A difference is called significant when McNemar's p < 0.05 (accuracy) or the 95% CI of the
difference excludes 0 (others). Written here rather than taken from scipy/statsmodels: the exact
McNemar test is a binomial tail, and the bootstrap has to re-run each task's own aggregate.
"""

from __future__ import annotations

import random
from math import comb
from typing import Any, Callable

ALPHA = 0.05
BINARY = ("acc", "acc_norm", "exact_match", "refusal", "refusal_rate")
LOWER_IS_BETTER = ("word_perplexity", "byte_perplexity", "token_perplexity", "bits_per_byte", "ece")


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: ``b`` items right only for one model, ``c`` only for the other."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired_ci(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 1234) -> tuple[float, float]:
    """95% percentile-bootstrap CI of mean(b) - mean(a), resampling items (paired)."""
    return paired_bootstrap(list(zip(a, b)), lambda pairs: sum(y - x for x, y in pairs) / len(pairs),
                            n_boot, seed)


def paired_bootstrap(pairs: list, stat: Callable[[list], float], n_boot: int = 2000,
                     seed: int = 1234) -> tuple[float, float]:
    """95% percentile-bootstrap CI of ``stat`` over item pairs resampled with replacement."""
    rng = random.Random(seed)
    n = len(pairs)
    vals = sorted(stat([pairs[rng.randrange(n)] for _ in range(n)]) for _ in range(n_boot))
    return vals[int(ALPHA / 2 * n_boot)], vals[int((1 - ALPHA / 2) * n_boot) - 1]


def compare(base: dict, other: dict, aggregate: Callable[[list], dict] | None = None,
            seed: int = 1234) -> dict[str, Any]:
    """``other`` against ``base`` (two result dicts of one task) on their primary metric, paired by
    example id. ``aggregate``: the task's aggregate (records -> metrics), needed for non-0/1 metrics.
    Returns the difference (other - base), its test and a sentence saying what it means."""
    metric = base["task"]["primary"]
    a = {e["id"]: e for e in base.get("examples", [])}
    b = {e["id"]: e for e in other.get("examples", [])}
    if not a or set(a) != set(b):
        return {"metric": metric, "comparable": False,
                "words": "not compared: the two results are not on the same items (split, limit or seed differ)"}
    ids = sorted(a)
    out: dict[str, Any] = {"metric": metric, "comparable": True, "n": len(ids),
                           "base": base["metrics"][metric]["value"], "value": other["metrics"][metric]["value"]}
    out["diff"] = out["value"] - out["base"]
    if metric in BINARY and all(metric in a[i] and metric in b[i] for i in ids):
        x = [float(a[i][metric]) for i in ids]
        y = [float(b[i][metric]) for i in ids]
        only_base = sum(1 for u, v in zip(x, y) if u > v)
        only_other = sum(1 for u, v in zip(x, y) if v > u)
        out |= {"test": "exact McNemar", "only_base": only_base, "only_other": only_other,
                "p": mcnemar_p(only_base, only_other), "ci95": paired_ci(x, y, seed=seed)}
        out["significant"] = out["p"] < ALPHA
    else:
        if aggregate is None:
            return out | {"comparable": False, "words": f"not compared: no aggregate for {metric}"}
        pairs = [(a[i], b[i]) for i in ids]

        def stat(ps):
            return aggregate([q for _, q in ps])[metric] - aggregate([p for p, _ in ps])[metric]
        out |= {"test": "paired bootstrap", "ci95": paired_bootstrap(pairs, stat, seed=seed)}
        lo, hi = out["ci95"]
        out["significant"] = lo > 0 or hi < 0
    out["words"] = describe(out)
    return out


def describe(c: dict) -> str:
    """The comparison in words: which way, how much, and whether it is more than noise."""
    m, d = c["metric"], c["diff"]
    pct = m in BINARY
    amount = f"{100 * d:+.1f} points" if pct else f"{d:+.3g}"
    better = (d < 0) if m in LOWER_IS_BETTER else (d > 0)
    lo, hi = c["ci95"]
    ci = f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" if pct else f"[{lo:+.3g}, {hi:+.3g}]"
    test = f"McNemar p = {c['p']:.3g}, {c['only_base']} vs {c['only_other']} discordant" if "p" in c \
        else "paired bootstrap"
    if d == 0 and not c["significant"]:
        return f"{m} unchanged on {c['n']} items ({test})"
    verdict = f"significantly {'better' if better else 'worse'}" if c["significant"] else "within noise"
    return f"{m} {amount} {ci}: {verdict} ({test}, n = {c['n']})"
