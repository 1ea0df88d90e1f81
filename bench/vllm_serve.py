"""medslm's server over vLLM's engine against vLLM's offline engine and the llama.cpp runtime, one run.

    .ci-vllm-venv/bin/python bench/vllm_serve.py --main-python .venv/bin/python \
        --gguf "$(python -c 'from medslm.models.loading import embedded_gguf; print(embedded_gguf())')"

For each concurrency level C (default 1, 2, 4, 8, 16): the output tok/s of

- vLLM's offline engine (``LLM.generate``) on the same chat prompts, in waves of C requests, greedy,
  ``--max-tokens`` each (its best case: no HTTP, no streaming);
- ``medslm bench serve --runtime vllm`` (C clients streaming chat completions from medslm serve);
- the llama.cpp runtime (``medslm bench serve --runtime llamacpp`` with ``--slots 1`` and ``--slots 2``,
  run by ``--main-python``, the environment that has llama-cpp-python), its best level;

and the ratios the issue names: medslm+vLLM / offline vLLM at the same C (target >= 0.90), and
medslm+vLLM at C = 16 / the llama.cpp runtime's best (target >= 2). Everything shares this
machine's cores with the load generator; the figures are for this machine, one run.
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

if __name__ == "__main__":  # vLLM spawns its engine process: everything below runs once
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m", help="the dense model vLLM serves (default: gemma3-270m fp32)")
    ap.add_argument("--gguf", required=True, help="the llama.cpp runtime's model (e.g. the embedded Q4_K_M)")
    ap.add_argument("--main-python", required=True, help="a Python with llama-cpp-python (the main venv)")
    ap.add_argument("--levels", default="1,2,4,8,16")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default=None, help="vLLM's weights: fp32 | bf16 | fp16 (default: the artifact's own, "
                    "fp32 for the converted Gemma); both vLLM rows use it")
    ap.add_argument("--out", default="bench/results/vllm_serve.json")
    ap.add_argument("--offline-json", help=argparse.SUPPRESS)  # internal: the offline measurement's child
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("MEDSLM_ENERGY", "0")

    from medslm.serve import loadgen
    from medslm.serve.chat import render

    def offline() -> dict[int, float]:
        from vllm import SamplingParams, TokensPrompt

        from medslm.backends.vllm import VLLMBackend
        from medslm.serve.vllm_runtime import VLLMRuntime

        be = VLLMBackend(a.model, max_num_seqs=max(levels), max_model_len=2048, dtype=a.dtype)
        rt = VLLMRuntime(be, None, a.model)  # tokenizer and chat facts only (no driver)
        prompts = [render(rt, [{"role": "user", "content": p}]).ids for p in loadgen.PROMPTS]
        sp = SamplingParams(temperature=0.0, max_tokens=a.max_tokens, stop_token_ids=sorted(rt.eos_ids))
        be.llm.generate([TokensPrompt(prompt_token_ids=prompts[0])], sp, use_tqdm=False)  # warm-up
        out = {}
        for c in levels:
            n = max(8, 3 * c)  # as medslm bench serve sends per level
            toks, t0 = 0, time.perf_counter()
            for w in range(0, n, c):
                wave = [TokensPrompt(prompt_token_ids=prompts[(w + i) % len(prompts)]) for i in range(min(c, n - w))]
                toks += sum(len(o.outputs[0].token_ids) for o in be.llm.generate(wave, sp, use_tqdm=False))
            out[c] = round(toks / (time.perf_counter() - t0), 2)
            print(f"offline vLLM, concurrency {c}: {out[c]} tok/s", flush=True)
        return out

    def served(python: str, runtime: str, model: str, slots: int | None, lv: list[int]) -> dict:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "r.json"
            cmd = [python, "-m", "medslm", "bench", "serve", "--runtime", runtime, "--model", model,
                   "--concurrency", ",".join(map(str, lv)), "--max-tokens", str(a.max_tokens), "--out", str(out),
                   "--n-ctx", "2048"]
            if slots:
                cmd += ["--slots", str(slots)]
            if runtime == "llamacpp":
                cmd += ["--threads", str(max(1, a.threads // (slots or 1)))]
            elif a.dtype:
                cmd += ["--dtype", a.dtype]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
            return json.loads(out.read_text())

    if a.offline_json:
        Path(a.offline_json).write_text(json.dumps(offline()))
        sys.exit(0)
    # the offline engine runs in a child process that exits before the server starts: an LLM left
    # alive in this process keeps its engine and worker processes, and they took cores from every
    # later measurement (an earlier version of this script, bf16 at concurrency 16: medslm's server
    # 196.7 tok/s, 0.54 of offline, and the llama.cpp runtime's best 133.6 with them alive; this one
    # 398.2, 1.02, and 154.9)
    with tempfile.TemporaryDirectory() as d:
        child = [sys.executable, __file__, *sys.argv[1:], "--offline-json", str(Path(d) / "off.json")]
        if subprocess.run(child).returncode != 0:
            sys.exit("the offline vLLM measurement failed (its output is above)")
        off = {int(k): v for k, v in json.loads((Path(d) / "off.json").read_text()).items()}
    srv = served(sys.executable, "vllm", a.model, max(levels), levels)
    mine = {lv["concurrency"]: lv["output_tok_per_s"] for lv in srv["levels"]}
    lcpp = {}
    for slots in (1, 2):
        r = served(a.main_python, "llamacpp", a.gguf, slots, [lv for lv in levels if lv <= 4] or [1, 2, 4])
        lcpp[slots] = {lv["concurrency"]: lv["output_tok_per_s"] for lv in r["levels"]}
    best = max(v for d in lcpp.values() for v in d.values())
    rows = ["| concurrency | vLLM offline tok/s | medslm serve --runtime vllm tok/s | ratio (target >= 0.90) | "
            "TTFT p50 ms | TPOT p50 ms |", "|---|---|---|---|---|---|"]
    for lv in srv["levels"]:
        c = lv["concurrency"]
        rows.append(f"| {c} | {off[c]} | {mine[c]} | {mine[c] / off[c]:.2f} | {lv['ttft_ms']['p50']} | "
                    f"{lv['tpot_ms']['p50']} |")
    top = max(levels)
    summary = {"offline": off, "medslm_vllm": mine, "llamacpp": lcpp, "llamacpp_best": best,
               "ratio_vs_offline": {c: round(mine[c] / off[c], 3) for c in levels},
               "ratio_top_vs_llamacpp_best": round(mine[top] / best, 3), "capacity_vllm": srv.get("capacity"),
               "max_tokens": a.max_tokens, "dtype": a.dtype or "the artifact's", "levels": srv["levels"]}
    print("\n".join(rows))
    print(f"llama.cpp runtime ({a.gguf}): " + "; ".join(f"--slots {s}: " + ", ".join(f"c{c} {v}" for c, v in d.items())
                                                        for s, d in lcpp.items()) + f" tok/s; best {best}")
    print(f"medslm serve --runtime vllm at concurrency {top}: {mine[top]} tok/s = {mine[top] / best:.2f}x the "
          f"llama.cpp runtime's best (target >= 2); capacity (TTFT <= 1 s, TPOT <= 100 ms): {srv.get('capacity')}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
