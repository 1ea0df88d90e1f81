"""Shared-context vs pair-by-pair scoring on Gemma 3 270M (the hf backend).

50 PubMedQA prompts (from MEDSLM_DATA_DIR's pubmedqa mirror) x 3 options (yes/no/maybe), scored
twice: each (context, option) pair separately, and with the context encoded once. Prints both
times, their ratio and the max absolute difference of the log-likelihoods, then one JSON line.

    MEDSLM_DATA_DIR=../shared/data python bench/shared_context.py [--n 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def prompts(n: int) -> list[str]:
    root = os.environ.get("MEDSLM_DATA_DIR")
    f = Path(root or "", "pubmedqa", "ori_pqal.json")
    if not root or not f.is_file():
        sys.exit("set MEDSLM_DATA_DIR to the data mirror (it needs pubmedqa/ori_pqal.json)")
    recs = list(json.loads(f.read_text()).values())[:n]
    return ["Abstract: " + "\n".join(r["CONTEXTS"]) + "\nQuestion: " + r["QUESTION"] + "\nAnswer:"
            for r in recs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    a = ap.parse_args()

    from medslm.backends.base import LoglikelihoodRequest
    from medslm.backends.hf import HFBackend

    reqs = [LoglikelihoodRequest(p, " " + o) for p in prompts(a.n) for o in ("yes", "no", "maybe")]
    be = HFBackend(a.model, threads=a.threads, batch_size=a.batch_size)
    be.loglikelihood(reqs[:3])  # warm-up
    times, res = {}, {}
    for mode in ("pairwise", "shared"):
        be.shared_context = mode == "shared"
        t = time.perf_counter()
        res[mode] = be.loglikelihood(reqs)
        times[mode] = time.perf_counter() - t
    diff = max(abs(a_[0] - b_[0]) for a_, b_ in zip(res["pairwise"], res["shared"]))
    ratio = times["pairwise"] / times["shared"]
    d = be.describe()
    print(f"model {a.model}  {len(reqs)} requests ({a.n} prompts x 3 options)  "
          f"threads {d['threads']}  cpu {d.get('cpu', d.get('gpu'))}")
    print(f"pair-by-pair  {times['pairwise']:8.2f} s")
    print(f"shared        {times['shared']:8.2f} s")
    print(f"speed-up      {ratio:8.2f} x")
    print(f"max |d loglik| {diff:.2e}")
    print(json.dumps({"bench": "shared_context", "n_requests": len(reqs),
                      "pairwise_s": round(times["pairwise"], 3), "shared_s": round(times["shared"], 3),
                      "ratio": round(ratio, 2), "max_abs_diff": diff, "threads": d["threads"]}))


if __name__ == "__main__":
    main()
