"""Does a recipe's compression read what it is evaluated on?

The contamination guard (:mod:`medslm.train.guard`) protects fine-tuning. Compression reads data
too: GPTQ and the calibrated prunes read calibration texts, distillation its corpus, trimming the
vocabulary of its corpus. A recipe whose GPTQ calibrates on ``pubmedqa`` while it evaluates
PubMedQA's train records (the mirror has no test split) may score texts its integers were chosen
on; one that trims on ``medmcqa`` keeps exactly the tokens its MedMCQA questions use. Neither
learns an answer, but each makes the evaluated text easier than text a shipped model meets.

:func:`overlaps` compares, by record id, the records each such step may read (its whole pool:
calibration samples from it) with the records the recipe evaluates (its tasks, splits, limits
and seed). The run prints each overlap before any work and the report states it; the fix is a
carve (``calibration: pubmedqa:fit@50`` with ``split: {pubmedqa: dev@50}``) or a training split.
"""

from __future__ import annotations

from typing import Any


def _reads(cfg) -> tuple[str, str] | None:
    """(field, spec) of the data a step's config reads, if it reads any."""
    method = getattr(cfg, "method", "")
    if method == "quantize" and getattr(cfg, "algorithm", "rtn") == "gptq":
        return "calibration", cfg.calibration
    if method == "prune" and getattr(cfg, "needs_calibration", False):
        return "calibration", cfg.calibration
    if method in ("trim", "distill") and getattr(cfg, "corpus", None):
        return "corpus", cfg.corpus
    return None


def step_records(method: str, field: str, spec: str) -> list:
    """The records a step may read from ``spec``, by the rule the step itself reads it with (text
    files and the generic corpus hold no records)."""
    from medslm.methods.calibration import item_records

    if spec.endswith(".txt"):
        return []
    return [e for item in [s.strip() for s in spec.split(",") if s.strip() and s.strip() != "generic"]
            for e in item_records(item, spec, field, every_split=method == "trim")[1]]


def evaluated(recipe) -> dict[str, str]:
    """{record id: task} of every record the recipe's evaluation scores."""
    from medslm.tasks import get_task

    out: dict[str, str] = {}
    for name in recipe.eval.tasks:
        t = get_task(name)
        for e in t.examples(recipe.eval.split_for(name), recipe.eval.limit_for(name), recipe.eval.seed):
            out.setdefault(str(e.id), name)
    return out


def overlaps(recipe) -> list[dict[str, Any]]:
    """One entry per variant step that may read evaluated records: variant, step number, method,
    field, spec, and the count per task."""
    from medslm.methods.base import parse_config

    scored = None
    found, cache = [], {}
    for v in recipe.variants:
        for i, step in enumerate(v.steps, 1):
            cfg = parse_config(step, f"variant {v.name} step {i}")
            reads = _reads(cfg)
            if reads is None:
                continue
            if scored is None:
                scored = evaluated(recipe)
            field, spec = reads
            key = (cfg.method, spec)
            if key not in cache:
                per: dict[str, int] = {}
                for e in step_records(cfg.method, field, spec):
                    task = scored.get(str(e.id))
                    if task is not None:
                        per[task] = per.get(task, 0) + 1
                cache[key] = per
            if cache[key]:
                found.append({"variant": v.name, "step": i, "method": cfg.method, "field": field,
                              "spec": spec, "evaluated": dict(sorted(cache[key].items()))})
    return found


def describe(o: dict[str, Any]) -> str:
    counts = ", ".join(f"{t} {n}" for t, n in o["evaluated"].items())
    return (f"{o['variant']} step {o['step']} ({o['method']}): {o['field']} {o['spec']!r} may read records "
            f"the evaluation scores ({counts}); carve them apart ({o['field']} NAME:fit@N, evaluation split "
            "NAME: dev@N) or name a training split (NAME:train)")
