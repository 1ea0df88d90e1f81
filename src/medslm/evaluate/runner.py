"""The evaluation runner: tasks x one backend -> one results JSON per task.

For each task: examples (a fixed, seeded subset with ``limit``) -> requests -> deduplicated ->
looked up in the on-disk request cache -> the missing ones sent to the backend in chunks, each
chunk committed to the cache as soon as it is done (so an interrupted run resumes where it
stopped and ends with identical results) -> per-example scores -> metrics with bootstrap 95% CIs,
efficiency, and everything needed to reproduce the numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from medslm.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest
from medslm.evaluate.cache import RequestCache, request_key
from medslm.evaluate.efficiency import decode_speed, hardware
from medslm.evaluate.metrics import bootstrap_ci
from medslm.models.artifact import package_versions
from medslm.models.chat_template import digest
from medslm.system import peak_rss_bytes
from medslm.tasks.base import Task, get_task

SCHEMA_VERSION = 1
KINDS = {LoglikelihoodRequest: "loglikelihood", RollingRequest: "loglikelihood_rolling",
         GenerateRequest: "generate"}
# requests per backend call and cache commit, unless the backend asks for others (``request_chunk``)
CHUNK = {"loglikelihood": 48, "loglikelihood_rolling": 4, "generate": 4}


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[-80:] or "model"


def _tokens(backend, req) -> int:
    if isinstance(req, LoglikelihoodRequest):
        return backend.count_tokens(req.context + req.continuation)
    if isinstance(req, RollingRequest):
        return backend.count_tokens(req.text)
    return backend.count_tokens(req.context)


def run_requests(backend, reqs: list, cache: RequestCache | None, progress: bool = True,
                 desc: str = "") -> tuple[list, list[float], list[bool]]:
    """Answer ``reqs`` (in order), using and filling the cache. Returns (answers, seconds, computed
    now rather than read from the cache)."""
    from tqdm.auto import tqdm

    bkey = backend.cache_key()
    backend.show_progress = False
    keys = [request_key(bkey, KINDS[type(r)], r) for r in reqs]
    known = cache.get_many(list(set(keys))) if cache else {}
    todo: dict[str, list[tuple[str, Any]]] = {}
    seen = set(known)
    for k, r in zip(keys, reqs):
        if k not in seen:
            seen.add(k)
            todo.setdefault(KINDS[type(r)], []).append((k, r))
    total = sum(len(v) for v in todo.values())
    bar = tqdm(total=total, desc=desc or "requests", unit="req", disable=not progress or total == 0,
               dynamic_ncols=True)
    for kind, items in todo.items():
        fn = getattr(backend, "generate" if kind == "generate" else kind)
        step = getattr(backend, "request_chunk", {}).get(kind, CHUNK[kind])
        for i in range(0, len(items), step):
            chunk = items[i:i + step]
            t = time.perf_counter()
            answers = fn([r for _, r in chunk])
            per = (time.perf_counter() - t) / len(chunk)
            rows = [(k, list(a) if isinstance(a, tuple) else a, per) for (k, _), a in zip(chunk, answers)]
            if cache:
                cache.put_many(rows)
            for k, a, s in rows:
                known[k] = (a, s)
            bar.update(len(chunk))
    bar.close()
    fresh = {k for v in todo.values() for k, _ in v}
    return [known[k][0] for k in keys], [known[k][1] for k in keys], [k in fresh for k in keys]


def chat_template_of(backend, mode: str) -> str | None:
    """The template ``--chat-template`` asks for: ``off`` none, ``auto`` the model's own if it has
    one, ``on`` the model's own (an error without one)."""
    if mode not in ("off", "auto", "on"):
        from medslm.errors import ConfigError

        raise ConfigError(f"--chat-template {mode!r}: choose off, auto or on")
    tpl = getattr(backend, "chat_template", None) or None
    if mode == "on" and not tpl:
        from medslm.errors import ConfigError

        raise ConfigError("--chat-template on: this model has no chat template (a base model; fine-tune "
                          "it with chat_template: true, or use --chat-template auto/off)")
    return tpl if mode != "off" else None


def _chat_prompt(task: Task) -> str | None:
    """The spec's chat-turn prompt, as the results record it (None: the turn carries the prompt)."""
    p = getattr(task.spec, "chat_prompt", None)
    return None if p is None else p if isinstance(p, str) else f"{p.__module__}.{p.__qualname__}"


def as_chat(backend, template: str, reqs: list) -> list:
    """Each prompt as one user turn of ``template`` (the answer is the model's turn, so a scored
    continuation loses its leading space, as training in chat form writes it); perplexity text
    stays plain."""
    from medslm.models.chat_template import user_turn

    bos, eos = backend.special_tokens.get("bos_token", ""), backend.special_tokens.get("eos_token", "")
    out = []
    for r in reqs:
        if isinstance(r, LoglikelihoodRequest):
            r = LoglikelihoodRequest(user_turn(template, r.context, bos, eos), r.continuation.lstrip())
        elif isinstance(r, GenerateRequest):
            r = GenerateRequest(user_turn(template, r.context, bos, eos), r.until, r.max_tokens)
        out.append(r)
    return out


def evaluate_task(backend, task: Task, *, split: str | None = None, limit: int | None = None,
                  seed: int = 1234, fewshot: int = 0, cache: RequestCache | None = None,
                  data_path: str | None = None, bootstrap: int = 1000, progress: bool = True,
                  decode: dict | None = None, chat_template: str = "off") -> dict[str, Any]:
    t0 = time.perf_counter()
    examples = task.examples(split, limit, seed, path=data_path)
    if not examples:
        from medslm.errors import MedslmError

        raise MedslmError(f"task {task.name}: no examples in split {split or task.split!r}")
    task.prepare(examples, fewshot=fewshot, seed=seed, path=data_path)
    template = chat_template_of(backend, chat_template)
    if template:
        per_ex = [as_chat(backend, template, task.chat_requests(e)) for e in examples]
    else:
        per_ex = [task.requests(e) for e in examples]
    flat = [r for rs in per_ex for r in rs]
    answers, seconds, fresh = run_requests(backend, flat, cache, progress, desc=task.name)
    records, lat = [], []
    i = 0
    for e, rs in zip(examples, per_ex):
        resp = answers[i:i + len(rs)]
        lat.append(sum(seconds[i:i + len(rs)]))
        i += len(rs)
        rec = task.score(e, resp)  # loglikelihood answers are [logprob, is_greedy]
        records.append({"id": e.id, **rec})
    metrics = task.aggregate(records)
    cis = bootstrap_ci(records, task.aggregate, n=bootstrap, seed=seed) if bootstrap else {}
    ll_secs = sum(s for r, s in zip(flat, seconds) if not isinstance(r, GenerateRequest))
    # tokens of each request, prompt and (for generation) output, counted once
    toks = [_tokens(backend, r) + (backend.count_tokens(a) if isinstance(r, GenerateRequest) and isinstance(a, str)
                                   else 0) for r, a in zip(flat, answers)]
    ll_toks = sum(n for r, n in zip(flat, toks) if not isinstance(r, GenerateRequest))
    gen_toks = sum(n for r, n in zip(flat, toks) if isinstance(r, GenerateRequest))
    # what this run computed (cached requests cost nothing now): the tokens its energy is divided by
    computed = sum(n for n, f in zip(toks, fresh) if f)
    lat_sorted = sorted(lat)
    desc = backend.describe()
    eff = {
        "parameters": desc.get("parameters"), "bytes": desc.get("bytes"),
        "peak_rss_bytes": peak_rss_bytes(),
        "prefill_tok_s": round(ll_toks / ll_secs, 1) if ll_secs > 0 else None,
        "latency_mean_s": round(sum(lat) / len(lat), 4),
        "latency_p95_s": round(lat_sorted[min(len(lat) - 1, int(0.95 * len(lat)))], 4),
        "wall_seconds": round(time.perf_counter() - t0, 2), "tokens": ll_toks + gen_toks,
        "tokens_computed": computed,
        **(decode or {}), **hardware(backend),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "task": {**task.describe(), "split": task.resolved_split or split or task.split,
                 "requested_split": split,
                 "n": len(examples), "limit": limit, "fewshot": fewshot, "seed": seed,
                 "chat_template": digest(template), "chat_mode": chat_template,
                 "chat_prompt": _chat_prompt(task) if template else None},
        "model": desc,
        "metrics": {k: {"value": v, "ci95": list(cis[k]) if k in cis else None}
                    for k, v in metrics.items()},
        "efficiency": eff,
        "reproducibility": {
            "seed": seed, "artifact_hash": desc.get("hash"), "task_prompt_version": task.prompt_version,
            "packages": package_versions(("rouge-score", "sentence-transformers")),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "bootstrap_resamples": bootstrap,
        },
        "examples": records,
    }


def result_filename(who: str, task: str) -> str:
    return f"{_slug(who)}__{task}.json"


def write_result(result: dict, output: str | Path, file: str | Path | None = None) -> Path:
    """Write one result JSON atomically: ``file``, or ``<output>/<model>__<task>.json``."""
    if file is None:
        who = result["model"].get("label") or result["model"].get("model", "model")
        file = Path(output) / result_filename(str(who), result["task"]["name"])
    from medslm.outputs import replace_file

    return replace_file(file, json.dumps(result, indent=1, default=float) + "\n")


def evaluate(backend, tasks: list[str | Task], *, split: str | dict[str, str] | None = None,
             limit: int | dict[str, int] | None = None,
             seed: int = 1234, fewshot: int = 0, output: str | Path | None = None,
             cache_path: str | Path | None = None, data_path: str | None = None,
             bootstrap: int = 1000, progress: bool = True, measure_decode: bool = True,
             chat_template: str = "off") -> list[dict]:
    """Evaluate ``backend`` on ``tasks``; write one JSON per task under ``output`` if given.
    ``limit``: one number for every task, or {task: number}; ``split`` likewise (e.g.
    ``{"pubmedqa": "dev@50", "medmcqa": "dev@500"}``; tasks not named keep their own split)."""
    from medslm import settings

    task_objs = [t if isinstance(t, Task) else get_task(t) for t in tasks]
    from medslm.energy import Meter, per_tokens

    cache = RequestCache(cache_path or settings.cache_dir() / "requests.sqlite")
    decode = decode_speed(backend) if measure_decode else None
    results = []
    meter = Meter()
    try:
        for t in task_objs:
            lim = limit.get(t.name) if isinstance(limit, dict) else limit
            sp = split.get(t.name) if isinstance(split, dict) else split
            with meter.task(t.name) as energy:
                res = evaluate_task(backend, t, split=sp, limit=lim, seed=seed, fewshot=fewshot,
                                    cache=cache, data_path=data_path, bootstrap=bootstrap,
                                    progress=progress, decode=decode, chat_template=chat_template)
            res["energy"] = per_tokens(energy, res["efficiency"]["tokens_computed"])
            if output is not None:
                res["path"] = str(write_result(res, output))
            results.append(res)
    finally:
        meter.close()
        cache.close()
    return results


def format_table(results: list[dict]) -> str:
    rows = [("task", "split", "n", "metric", "value", "95% CI", "decode tok/s", "peak RSS")]
    for r in results:
        prim = r["task"]["primary"]
        first = True
        for k, m in r["metrics"].items():
            if k.startswith("case_"):
                continue
            ci = m["ci95"]
            v = m["value"]
            rows.append((r["task"]["name"] if first else "", r["task"]["split"] if first else "",
                         str(r["task"]["n"]) if first else "", k + (" *" if k == prim else ""),
                         f"{v:.4f}" if isinstance(v, float) else str(v),
                         f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "",
                         f"{r['efficiency'].get('decode_tok_s', '')}" if first else "",
                         f"{r['efficiency']['peak_rss_bytes'] / 2**20:.0f} MiB" if first else ""))
            first = False
    w = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    notes = {r["task"]["approximate"] for r in results if r["task"].get("approximate")}
    warn = [f"WARNING: this model was trained with --allow-overlap on evaluation data "
            f"{r['model']['contamination_allowed']}; scores may be contaminated"
            for r in results[:1] if r["model"].get("overlap_allowed")]
    return "\n".join(lines + [f"approximate: {n}" for n in notes] + ["* primary metric"] + warn)
