"""Generation throughput of ``medslm eval --backend vllm`` against the hf backend, one run.

    python bench/vllm_generation.py --vllm-python .ci-vllm-venv/bin/python

Both evaluate MedQuAD (open generation, greedy, up to 128 tokens an answer, the task's own stop
strings) on Gemma 3 270M's converted artifact in fp32, each with an empty request cache of its own:
vLLM on ``--n`` questions (default 100) through ``medslm eval`` in vLLM's environment, the hf backend
on ``--hf-n`` of them (default 20: it decodes one answer at a time at about 10-20 tok/s here, so
100 would take half an hour; its throughput does not depend on how many it is given). Throughput is
the answers' tokens (counted with the model's tokenizer) over the seconds the backend spent
generating them (the runner's per-request times, which for vLLM are a batch's time shared among
its requests; model loading excluded). On the questions both runs' seeded subsets share, the
number of identical answers is printed (greedy in fp32 on both; a difference is a
near-tie of two tokens decided by another summation order). The issue's target: vLLM >= 5x hf.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_eval(python: str, backend: str, model: str, n: int, out: Path, threads: int) -> tuple[dict, float]:
    cmd = [python, "-m", "medslm", "eval", "--backend", backend, "--model", model, "--tasks", "medquad",
           "--limit", f"medquad={n}", "--bootstrap", "0", "--no-decode-bench", "--threads", str(threads),
           "--cache", str(out / "requests.sqlite"), "--output", str(out / "results"), "--label", backend]
    env = {**os.environ, "MEDSLM_ENERGY": "0", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"),
           "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{backend} evaluation failed ({' '.join(cmd)}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return json.loads(next((out / "results").glob("*.json")).read_text()), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default=os.environ.get("MEDSLM_VLLM_PYTHON"),
                    help="a Python with vllm-cpu (or vllm) and medslm installed (default $MEDSLM_VLLM_PYTHON)")
    ap.add_argument("--n", type=int, default=100, help="MedQuAD questions for vLLM")
    ap.add_argument("--hf-n", type=int, default=20, help="MedQuAD questions for the hf backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/vllm_generation.json")
    a = ap.parse_args()
    if not a.vllm_python or not Path(a.vllm_python).is_file():
        sys.exit("--vllm-python: give the Python of vLLM's environment (README: Backends)")
    from transformers import AutoTokenizer

    from medslm.models.loading import resolve

    art = resolve("gemma3-270m").artifact()
    tok = AutoTokenizer.from_pretrained(str(art.path))
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        for backend, python, n in (("vllm", a.vllm_python, a.n), ("hf", sys.executable, a.hf_n)):
            res, wall = run_eval(python, backend, str(art.path), n, Path(d) / backend, a.threads)
            answers = {e["id"]: e["generation"] for e in res["examples"]}
            toks = sum(len(tok(t, add_special_tokens=False).input_ids) for t in answers.values())
            secs = res["efficiency"]["latency_mean_s"] * len(answers)  # one request per question
            rows[backend] = {"questions": len(answers), "answer_tokens": toks, "generate_seconds": round(secs, 1),
                             "tok_s": round(toks / secs, 2), "process_seconds": round(wall, 1),
                             "rougeL": round(res["metrics"]["rougeL"]["value"], 4), "answers": answers,
                             "versions": {**res["reproducibility"].get("packages", {}),
                                          **({"vllm": res["model"]["vllm"]} if res["model"].get("vllm") else {})}}
            print(f"{backend}: {len(answers)} answers, {toks} tokens in {secs:.1f} s of generation: "
                  f"{toks / secs:.1f} tok/s (process {wall:.0f} s)", flush=True)
    v, h = rows["vllm"], rows["hf"]
    both = sorted(set(v["answers"]) & set(h["answers"]))
    same = sum(v["answers"][i] == h["answers"][i] for i in both)
    ratio = v["tok_s"] / h["tok_s"]
    print(f"\nvLLM / hf generation throughput: {ratio:.2f}x (target >= 5); identical answers on the "
          f"{len(both)} questions both answered: {same}")
    summary = {"model": str(art.path), "artifact_hash": art.hash, "threads": a.threads, "ratio": round(ratio, 2),
               "common_questions": len(both), "identical_answers": same,
               **{k: {kk: vv for kk, vv in r.items() if kk != "answers"} for k, r in rows.items()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
