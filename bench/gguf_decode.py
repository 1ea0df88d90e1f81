"""Decode speed where a compressed model ships: GGUF files on llama.cpp against llama.cpp's own
Q4_K_M of the base (the peer, measured side by side in the same run, same threads), and the hf
fp32 base on PyTorch.

Each model: one warm-up, then ``--runs`` greedy decodes of ``--tokens`` tokens from a fixed medical
prompt (end-of-sequence ignored, so every run decodes the same count); the figure is the best
run's tokens/s, prefill excluded (timed from the first generated token). Threads never exceed the
free cores (oversubscribed OpenMP threads crawl).

    python bench/gguf_decode.py --peer PEER.gguf NAME=FILE.gguf ... [--hf gemma3-270m] [--threads 2]

Prints one line per model (MB on disk, tok/s, ratio to the peer) and a JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

PROMPT = "Question: What are the first-line treatments for type 2 diabetes mellitus?\nAnswer:"


def gguf_tok_s(path: str, threads: int, tokens: int, runs: int) -> float:
    from medslm.backends.llamacpp import open_llama  # without AMX repacks on AMX CPUs (they segfault)

    llm = open_llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
    prompt = llm.tokenize(PROMPT.encode())
    best = 0.0
    for r in range(runs + 1):  # the first is a warm-up
        llm.reset()
        t0 = None
        n = 0
        for _ in llm.generate(prompt, temp=0.0, reset=True):
            if t0 is None:
                t0 = time.perf_counter()  # prefill done: the first token is out
            n += 1
            if n > tokens:
                break
        rate = tokens / (time.perf_counter() - t0)
        if r:
            best = max(best, rate)
    del llm
    return best


def hf_tok_s(model: str, threads: int, tokens: int, runs: int) -> float:
    import torch

    from medslm.models.loading import resolve

    torch.set_num_threads(threads)
    m, tok = resolve(model).artifact().load(dtype="float32")
    ids = tok(PROMPT, return_tensors="pt").input_ids
    best = 0.0
    with torch.no_grad():
        out = m(ids, use_cache=True)  # prefill, outside the timing
        for r in range(runs + 1):
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            past = copy.deepcopy(past)
            t0 = time.perf_counter()
            for _ in range(tokens):
                o = m(nxt, past_key_values=past, use_cache=True)
                past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
            rate = tokens / (time.perf_counter() - t0)
            if r:
                best = max(best, rate)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", metavar="NAME=FILE.gguf")
    ap.add_argument("--peer", required=True, help="llama.cpp's own Q4_K_M of the base (the reference)")
    ap.add_argument("--hf", default=None, help="also this model on the hf backend in fp32 (e.g. gemma3-270m)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for spec in [f"peer={a.peer}"] + a.models:
        name, _, path = spec.partition("=")
        rows.append({"name": name, "file": path, "bytes": os.path.getsize(path),
                     "tok_s": round(gguf_tok_s(path, a.threads, a.tokens, a.runs), 2), "runtime": "llama.cpp"})
    if a.hf:
        rows.append({"name": f"hf-fp32:{a.hf}", "file": a.hf, "bytes": None,
                     "tok_s": round(hf_tok_s(a.hf, a.threads, a.tokens, a.runs), 2), "runtime": "transformers"})
    peer = rows[0]["tok_s"]
    print(f"decode, {a.tokens} tokens, best of {a.runs}, {a.threads} threads; ratio to the peer {a.peer}")
    print(f"{'model':32} {'MB':>8} {'tok/s':>8} {'x peer':>7}")
    for r in rows:
        r["vs_peer"] = round(r["tok_s"] / peer, 3)
        mb = f"{r['bytes'] / 1e6:8.1f}" if r["bytes"] else f"{'':8}"
        print(f"{r['name']:32} {mb} {r['tok_s']:8.1f} {r['vs_peer']:7.2f}")
    print(json.dumps({"bench": "gguf_decode", "threads": a.threads, "tokens": a.tokens, "runs": a.runs,
                      "models": rows}))


if __name__ == "__main__":
    main()
