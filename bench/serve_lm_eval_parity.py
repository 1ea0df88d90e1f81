"""lm-evaluation-harness through ``medslm serve`` vs in-process ``medslm eval`` on the same backend.

Starts ``medslm serve`` (llamacpp backend, the embedded Gemma 3 270M Q4_K_M GGUF), runs lm-eval's
``local-completions`` model against it on the mirror's PubMedQA (lm-eval tokenizes with the
model's Hugging Face tokenizer and sends token ids with ``echo``, ``logprobs=1``, ``max_tokens=1``),
stops the server, then scores the same items in-process with the llamacpp backend and
``--scoring pairwise`` (each context + continuation in one pass, as the server scores an echo).
Prints both accuracies, prediction agreement and the per-item max |delta loglik|; one JSON line.

    MEDSLM_DATA_DIR=../shared/data python bench/serve_lm_eval_parity.py \
        --lm-eval-python /path/to/venv-with-lm_eval/bin/python [--limit 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lm_eval_parity import task_yaml, write_data  # noqa: E402

LM_EVAL_SCRIPT = """
import json, sys, time
import lm_eval
from lm_eval.tasks import TaskManager
url, tok_dir, yaml_dir, task = sys.argv[1:5]
t = time.perf_counter()
out = lm_eval.simple_evaluate(
    model="local-completions",
    model_args=f"model=gemma3-270m,base_url={url}/v1/completions,tokenizer_backend=huggingface,"
               f"tokenizer={tok_dir},tokenized_requests=True,add_bos_token=True,num_concurrent=1,max_retries=1",
    tasks=[task], task_manager=TaskManager(include_path=yaml_dir), log_samples=True)
wall = time.perf_counter() - t
rows = sorted(out["samples"][task], key=lambda s: s["doc_id"])
print("@@" + json.dumps({"wall": wall, "acc": out["results"][task]["acc,none"],
                         "lls": [[float(r[0]) for r in s["filtered_resps"]] for s in rows]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="first N PubMedQA records (default: all 500)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm-eval-python", default=sys.executable)
    a = ap.parse_args()

    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.evaluate.runner import evaluate
    from medslm.models.loading import resolve
    from medslm.tasks import get_task

    tok_dir = resolve("gemma3-270m").artifact().path  # the GGUF's tokenizer, converted (same vocabulary)
    tmp = Path(tempfile.mkdtemp(prefix="serve-parity-"))
    task = get_task("pubmedqa")
    ex = task.examples()
    ex = ex[: a.limit] if a.limit else ex
    write_data("pubmedqa", ex, tmp)
    (tmp / "pubmedqa.yaml").write_text(task_yaml("pubmedqa", tmp / "pubmedqa.jsonl"))

    from medslm.serve.server import start_subprocess

    srv, url = start_subprocess(["--model", "gemma3-270m", "--backend", "llamacpp", "--threads", str(a.threads),
                                 "--n-ctx", "2048"])
    try:
        p = subprocess.run([a.lm_eval_python, "-c", LM_EVAL_SCRIPT, url, str(tok_dir), str(tmp), "parity_pubmedqa"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit("lm_eval failed:\n" + p.stderr[-3000:])
        theirs = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("@@"))[2:])
    finally:
        srv.terminate()
        srv.wait(30)

    be = LlamaCppBackend("gemma3-270m", threads=a.threads, n_ctx=2048, shared_context=False)
    task.examples = lambda *args, **kw: ex
    t1 = time.perf_counter()
    res = evaluate(be, [task], bootstrap=0, measure_decode=False, progress=False,
                   cache_path=tmp / "medslm-cache.sqlite")[0]
    wall = time.perf_counter() - t1
    ours = res["examples"]
    lls = theirs["lls"]
    agree = sum(int(o["pred"] == max(range(len(ll)), key=ll.__getitem__)) for o, ll in zip(ours, lls))
    diffs = [abs(x - y) for o, ll in zip(ours, lls) for x, y in zip(o["loglik"], ll)]
    acc_ms, acc_lm = res["metrics"]["acc"]["value"], theirs["acc"]
    print(f"pubmedqa n={len(ours)}: lm-eval via medslm serve acc {100 * acc_lm:.2f} ({theirs['wall']:.0f} s); "
          f"in-process medslm eval (llamacpp, pairwise) acc {100 * acc_ms:.2f} ({wall:.0f} s)")
    print(f"  prediction agreement {agree}/{len(ours)}; max |d loglik| {max(diffs):.2e}; "
          f"items with |d| > 1e-3: {sum(d > 1e-3 for d in diffs)} of {len(diffs)}")
    print(json.dumps({"bench": "serve_lm_eval_parity", "n": len(ours), "acc_lm_eval_server": acc_lm,
                      "acc_medslm": acc_ms, "agreement": agree / len(ours), "max_abs_dll": max(diffs),
                      "lm_eval_s": round(theirs["wall"], 1), "medslm_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
