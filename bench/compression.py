"""Compression bench on Gemma 3 270M: every built method side by side, one table and its JSON.

Variants: base fp32 and bf16, int8, int4 (round to nearest and GPTQ), Wanda 50% with medical and with
generic calibration, SparseGPT 50% (medical), Wanda 2:4, depth-pruned 25%, half the attention heads
(Gemma 3 270M: 4 -> 2) or a quarter of the MLP channels removed, trimmed vocabulary, trimmed + int4
(+ int8 embeddings). Columns: MiB on disk, parameters, medppl, PubMedQA acc, MedMCQA acc, decode tok/s, peak RSS. It is a recipe run (cached and resumable), so a
rerun only computes what is missing.

    MEDSLM_DATA_DIR=../shared/data python bench/compression.py [--pubmedqa 500 --medmcqa 500 --medppl 100]

With --gguf, also on llama.cpp: the model's own GGUF, the base exported to f16 and to q4_k_m,
and the trimmed vocabulary exported to q4_k_m (medslm export); --variants can name them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "base": [],
    "base-bf16": [],  # evaluated in bf16 (DTYPES)
    # GPTQ with zero points, clip search, act-order and block-sequential calibration on 128 medical
    # texts, groups of 32; the value and down projections at 8 bits (mixed precision, as llama.cpp's
    # Q4_K_M keeps them at 6)
    "int4-gptq": [{"method": "quantize", "bits": 4, "algorithm": "gptq", "calibration": "pubmedqa,medquad",
                   "samples": 128, "group_size": 32, "symmetric": False, "clip_search": True,
                   "act_order": True, "sequential": True, "bits8": ["*.v_proj", "*.down_proj"]}],
    "int8": [{"method": "quantize", "bits": 8}],
    "int4": [{"method": "quantize", "bits": 4}],
    "wanda50-medical": [{"method": "prune", "algorithm": "wanda", "sparsity": 0.5,
                         "calibration": "pubmedqa,medquad"}],
    "wanda50-generic": [{"method": "prune", "algorithm": "wanda", "sparsity": 0.5, "calibration": "generic"}],
    "sparsegpt50-medical": [{"method": "prune", "algorithm": "sparsegpt", "sparsity": 0.5,
                            "calibration": "pubmedqa,medquad"}],
    "wanda-2of4": [{"method": "prune", "algorithm": "wanda", "pattern": "2:4", "calibration": "pubmedqa,medquad"}],
    "depth25": [{"method": "prune", "algorithm": "depth", "sparsity": 0.25, "calibration": "pubmedqa,medquad"}],
    "heads50": [{"method": "prune", "algorithm": "heads", "sparsity": 0.5, "calibration": "pubmedqa,medquad"}],
    "width25": [{"method": "prune", "algorithm": "width", "sparsity": 0.25, "calibration": "pubmedqa,medquad"}],
    "trim": [{"method": "trim"}],
    "trim+int4": [{"method": "trim"}, {"method": "quantize", "bits": 4, "embeddings": "int8"}],
}
DTYPES = {"base-bf16": "bf16"}
GGUF = {  # on llama.cpp (--gguf adds them all; or name them in --variants)
    "gguf-own": {"backend": "llamacpp"},  # the model's own GGUF (Q4_K_M for gemma3-270m)
    "gguf-f16": {"backend": "llamacpp", "gguf": "f16"},
    "gguf-q4_k_m": {"backend": "llamacpp", "gguf": "q4_k_m"},
    "trim+gguf-q4_k_m": {"backend": "llamacpp", "gguf": "q4_k_m", "steps": [{"method": "trim"}]},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--pubmedqa", type=int, default=500)
    ap.add_argument("--medmcqa", type=int, default=500)
    ap.add_argument("--medppl", type=int, default=100)
    ap.add_argument("--output", default="runs/bench-compression")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per evaluation (default: all cores)")
    ap.add_argument("--gguf", action="store_true",
                    help="also the model's own GGUF (Q4_K_M for gemma3-270m) on llama.cpp (needs medslm[llamacpp])")
    a = ap.parse_args()

    import yaml

    from medslm.pipeline import load_recipe, run_recipe

    names = a.variants.split(",")
    if a.gguf:
        names += [n for n in GGUF if n not in names]
    unknown = set(names) - set(VARIANTS) - set(GGUF)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {', '.join([*VARIANTS, *GGUF])}")
    variants = [{"name": n} | (GGUF[n] if n in GGUF else {"steps": VARIANTS[n]})
                | ({"dtype": DTYPES[n]} if n in DTYPES else {}) for n in names]
    recipe = {"version": 1, "name": "bench-compression", "model": a.model,
              "eval": {"tasks": ["pubmedqa", "medmcqa", "medppl"],
                       "limit": {"pubmedqa": a.pubmedqa, "medmcqa": a.medmcqa, "medppl": a.medppl}},
              "variants": variants}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(recipe, f)
    out = run_recipe(load_recipe(f.name), a.output, threads=a.threads)
    print((Path(out) / "report.md").read_text())
    lb = json.loads((Path(out) / "leaderboard.json").read_text())
    base = next(m for m in lb["models"] if m["label"] == "base")
    for m in lb["models"]:
        m["bytes_vs_base"] = round(m["bytes"] / base["bytes"], 4)
    print(json.dumps({"bench": "compression", "models": [
        {k: m[k] for k in ("label", "chain", "bytes", "bytes_vs_base", "parameters", "peak_rss_bytes",
                           "decode_tok_s")} | {t: v["value"] for t, v in m["metrics"].items()}
        for m in lb["models"]]}))


if __name__ == "__main__":
    main()
