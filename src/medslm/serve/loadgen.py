"""``medslm bench serve``: load a running server the way clinicians' tools would, and report latency.

One asyncio + httpx process (it shares the machine's cores with the server, which it says in its
output). Each request streams a chat completion and records, from the client's side: time to first
token (TTFT), inter-token latency (ITL, between content chunks), time per output token (TPOT,
(end - first token) / (tokens - 1)), end-to-end latency, and the status. Modes:

- ``concurrency``: N clients, each sending its next request as soon as the last one ends;
- ``poisson``: requests arrive at ``rate`` per second with exponential gaps (open loop).

*Capacity* is the highest tested concurrency at which at least 90% of requests have TTFT <= 1 s and
TPOT <= 100 ms. With ``--compare-in-process`` the single-stream decode speed through the server is
compared with the same model generating in this process (run one after the other, not at once).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

PROMPTS = [
    "What are the first-line treatments for hypertension in adults?",
    "Explain the difference between type 1 and type 2 diabetes.",
    "What are common side effects of metformin?",
    "How is community-acquired pneumonia diagnosed?",
    "What causes scurvy and how is it treated?",
    "When should a patient with chest pain go to the emergency department?",
]


@dataclass
class Result:
    status: int
    ttft: float | None = None
    e2e: float = 0.0
    tokens: int = 0
    itl: list[float] = field(default_factory=list)

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.tokens - 1)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def one(client: Any, url: str, body: dict, headers: dict) -> Result:
    t0 = time.perf_counter()
    last = None
    r = Result(status=0)
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as resp:
            r.status = resp.status_code
            if resp.status_code != 200:
                await resp.aread()
                r.e2e = time.perf_counter() - t0
                return r
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                d = json.loads(line[6:])
                if d.get("usage"):
                    r.tokens = d["usage"]["completion_tokens"]
                ch = d.get("choices") or []
                if ch and ch[0].get("delta", {}).get("content"):
                    now = time.perf_counter()
                    if r.ttft is None:
                        r.ttft = now - t0
                    elif last is not None:
                        r.itl.append(now - last)
                    last = now
    except Exception:  # noqa: BLE001 - a failed request is a result (status 0), not a crash
        r.status = r.status or 0
    r.e2e = time.perf_counter() - t0
    return r


def summarize(results: list[Result], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.status == 200]
    ms = lambda xs: {f"p{q}": (round(1000 * v, 1) if v is not None else None) for q in (50, 90, 99)  # noqa: E731
                     for v in [pct(xs, q)]}
    good = [r for r in ok if r.ttft is not None and r.ttft <= 1.0 and (r.tpot is None or r.tpot <= 0.1)]
    toks = sum(r.tokens for r in ok)
    return {
        "requests": len(results), "ok": len(ok),
        "error_rate": round(sum(1 for r in results if r.status not in (200, 429)) / max(1, len(results)), 4),
        "rate_429": round(sum(1 for r in results if r.status == 429) / max(1, len(results)), 4),
        "ttft_ms": ms([r.ttft for r in ok if r.ttft is not None]),
        "tpot_ms": ms([r.tpot for r in ok if r.tpot is not None]),
        "itl_ms": ms([x for r in ok for x in r.itl]),
        "e2e_ms": ms([r.e2e for r in ok]),
        "requests_per_s": round(len(ok) / wall, 3), "output_tok_per_s": round(toks / wall, 2),
        "output_tokens": toks,
        "slo_fraction": round(len(good) / max(1, len(results)), 4),
        "wall_s": round(wall, 2),
    }


async def run_level(url: str, *, concurrency: int, requests: int, max_tokens: int, api_key: str | None,
                    mode: str = "concurrency", rate: float = 1.0, seed: int = 0) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rng = random.Random(seed)
    bodies = [{"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens,
               "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
              for i in range(requests)]
    limits = httpx.Limits(max_connections=max(concurrency, 1) + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        t0 = time.perf_counter()
        if mode == "poisson":
            tasks = []
            for b in bodies:
                tasks.append(asyncio.ensure_future(one(client, url, b, headers)))
                await asyncio.sleep(rng.expovariate(rate))
            results = list(await asyncio.gather(*tasks))
        else:
            queue = list(bodies)
            results = []

            async def worker() -> None:
                while queue:
                    results.append(await one(client, url, queue.pop(), headers))
            await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    out = summarize(results, wall)
    out.update({"mode": mode, "concurrency": concurrency if mode != "poisson" else None,
                "rate": rate if mode == "poisson" else None, "max_tokens": max_tokens})
    return out


def capacity(levels: list[dict[str, Any]]) -> int | None:
    ok = [lv["concurrency"] for lv in levels if lv.get("concurrency") and lv["slo_fraction"] >= 0.9]
    return max(ok) if ok else None


def in_process_decode(model: str, backend: str, threads: int | None, n_ctx: int, max_tokens: int,
                      dtype: str | None = None) -> float:
    """Decode tokens/s of the same model generating in this process (greedy, one stream), in the
    server's ``dtype``."""
    from medslm.serve.chat import render
    from medslm.serve.engine import Job, Sampling
    from medslm.serve.runtime import load_runtime

    rt = load_runtime(model, backend, threads=threads, n_ctx=n_ctx, dtype=dtype)
    ids = render(rt, [{"role": "user", "content": PROMPTS[0]}]).ids
    job = Job(ids, Sampling(max_tokens=max_tokens, temperature=0.0), 600.0)
    job.run(rt, lambda ev: None)
    first, last = job.stamps[0], job.stamps[-1]
    del rt
    return (len(job.generated) - 1) / (last - first) if len(job.generated) > 1 and last > first else 0.0


def format_report(res: dict[str, Any]) -> str:
    rows = ["| mode | conc | rate | ok/req | 429 | err | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | "
            "ITL p50/p99 ms | E2E p50/p99 ms | req/s | out tok/s | SLO met | Wh/1k out tok |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in res["levels"]:
        t, p, i, e = lv["ttft_ms"], lv["tpot_ms"], lv["itl_ms"], lv["e2e_ms"]
        rows.append(f"| {lv['mode']} | {lv['concurrency'] or ''} | {lv['rate'] or ''} | {lv['ok']}/{lv['requests']} | "
                    f"{lv['rate_429']:.0%} | {lv['error_rate']:.0%} | {t['p50']}/{t['p90']}/{t['p99']} | "
                    f"{p['p50']}/{p['p90']}/{p['p99']} | {i['p50']}/{i['p99']} | {e['p50']}/{e['p99']} | "
                    f"{lv['requests_per_s']} | {lv['output_tok_per_s']} | {lv['slo_fraction']:.0%} | "
                    f"{(lv.get('energy') or {}).get('wh_per_1k_tokens', '')} |")
    lines = ["\n".join(rows), "",
             f"capacity (>= 90% of requests with TTFT <= 1 s and TPOT <= 100 ms): "
             f"{res['capacity'] if res['capacity'] is not None else 'none of the tested levels'}"]
    if res.get("single_stream_tok_s") is not None:
        lines.append(f"single-stream decode through the server: {res['single_stream_tok_s']:.1f} tok/s")
    if res.get("in_process_tok_s"):
        lines.append(f"same model in-process: {res['in_process_tok_s']:.1f} tok/s; ratio "
                     f"{res['single_stream_tok_s'] / res['in_process_tok_s']:.2f} (target >= 0.90)")
    lines.append("note: the load generator runs on the same machine and shares its cores with the server")
    methods = {(lv.get("energy") or {}).get("method") for lv in res["levels"]} - {None}
    if methods:
        lines.append("energy: the whole machine's during each level, " + "; ".join(sorted(methods)))
    return "\n".join(lines)
