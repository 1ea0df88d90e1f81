"""Compression bench on Gemma 3 270M: every built method side by side, one table and its JSON.

Variants: base fp32 and bf16, int8, int4 (round to nearest and GPTQ), Wanda 50% with medical and with
generic calibration, SparseGPT 50% (medical), Wanda 2:4, depth-pruned 25%, half the attention heads
(Gemma 3 270M: 4 -> 2) or a quarter of the MLP channels removed, trimmed vocabulary, trimmed + int4
(+ int8 embeddings). Columns: MiB on disk, parameters, medppl, PubMedQA acc, MedMCQA acc, decode tok/s, peak RSS. It is a recipe run (cached and resumable), so a
rerun only computes what is missing.

    MEDSLM_DATA_DIR=../shared/data python bench/compression.py [--pubmedqa 500 --medmcqa 500 --medppl 100]

With --gguf, also on llama.cpp, where a compressed model ships: the model's own GGUF (llama.cpp's
Q4_K_M of Gemma 3 270M), the base exported to f16, q4_0, q4_1 and q4_k_m by llama.cpp's quantizer,
the trimmed vocabulary exported to q4_k_m, and medslm's GPTQ integers written as GGUF blocks (Q4_0,
Q4_1, and trimmed + int4 embedding); --variants can name them too, and the peers of medslm's mixes:
llama.cpp's quantizer at the same per-tensor types, alone and with an importance matrix computed on
the same calibration texts (gguf-q4_0-mlp8, gguf-q4_0-mlp8-imatrix, gguf-q4_0-imatrix,
gguf-q4_k_m-imatrix). Then a speed and size table
against llama.cpp's Q4_K_M of the base (same threads, same run) and the paired tests against the
base (from the report).

    MEDSLM_DATA_DIR=../shared/data python bench/compression.py --gguf --threads 2 \
        --variants base --pubmedqa 100 --medmcqa 100 --medppl 20
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
# GPTQ on the GGUF grid: act-order, block-sequential, 64 medical calibration texts, groups of 32
GPTQ_GGUF = {"method": "quantize", "bits": 4, "algorithm": "gptq", "target": "gguf", "act_order": True,
             "sequential": True, "samples": 64, "calibration": "pubmedqa,medquad"}
VD8 = ["*.v_proj", "*.down_proj"]
ATT8 = ["*.q_proj", "*.k_proj", "*.o_proj", *VD8]
MLP8 = ["*.gate_proj", "*.up_proj", *VD8]
MLP8_TYPES = {"ffn_(gate|up|down)|attn_v": "q8_0", "token_embd": "q5_0"}  # MLP8 + int5 embedding, GGUF names
IMATRIX = {"gguf_imatrix": GPTQ_GGUF["calibration"], "gguf_imatrix_samples": GPTQ_GGUF["samples"]}  # GPTQ's texts
GGUF = {  # on llama.cpp (--gguf adds them all; or name them in --variants)
    "gguf-own": {"backend": "llamacpp"},  # the model's own GGUF (Q4_K_M for gemma3-270m)
    "gguf-f16": {"backend": "llamacpp", "gguf": "f16"},
    "gguf-q4_0": {"backend": "llamacpp", "gguf": "q4_0"},
    "gguf-q4_1": {"backend": "llamacpp", "gguf": "q4_1"},
    "gguf-q4_k_m": {"backend": "llamacpp", "gguf": "q4_k_m"},
    "trim+gguf-q4_k_m": {"backend": "llamacpp", "gguf": "q4_k_m", "steps": [{"method": "trim"}]},
    # medslm's integers as GGUF blocks (no requantization); the embedding int8 (Q8_0) or int4 (Q4_0)
    "medslm-gptq-q4_0": {"backend": "llamacpp", "steps": [GPTQ_GGUF]},
    "medslm-gptq-q4_1": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"symmetric": False}]},
    # the value and down projections Q8_0 (as llama.cpp's Q4_K_M keeps them wider): alone (v8d8, more
    # bytes than Q4_0), and mixed within Q4_0's bytes by an embedding (most of the bytes: also the tied
    # head) of Q5_0 instead of Q8_0
    "medslm-gptq-q4_0-v8d8": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"bits8": VD8}]},
    "medslm-gptq-q4_0-mix": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"bits8": VD8, "embeddings": "int5"}]},
    "medslm-gptq-q4_1-mix": {"backend": "llamacpp",
                             "steps": [GPTQ_GGUF | {"symmetric": False, "bits8": VD8, "embeddings": "int5"}]},
    # the attention all Q8_0 too (q/k/o/v; the MLP's gate/up Q4_0, down Q8_0), still under Q4_0's bytes;
    # then the same with 60 steps of recovery: the integers and scales trained on their grid to match
    # the dense model's next-token distributions (medslm.methods.recover): same types and bytes
    "medslm-gptq-q4_0-mix8": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"bits8": ATT8, "embeddings": "int5"}]},
    # or the MLP all Q8_0 (gate/up/down; v too), the attention's q/k/o Q4_0
    "medslm-gptq-q4_0-mlp8": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"bits8": MLP8, "embeddings": "int5"}]},
    "medslm-gptq-q4_0-mlp8-rec": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"bits8": MLP8, "embeddings": "int5",
                                                                                "recover_steps": 60}]},
    "medslm-gptq-q4_0-mix8-rec": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"bits8": ATT8, "embeddings": "int5",
                                                                                "recover_steps": 60}]},
    "trim+medslm-gptq-q4_0": {"backend": "llamacpp", "steps": [{"method": "trim"}, GPTQ_GGUF | {"embeddings": "int4"}]},
    # llama.cpp's Q4_K_M mix of tensor types (Q4_K, Q6_K, Q5_0, Q8_0), medslm's integers on its grid:
    # the same types and bytes as gguf-q4_k_m, its peer
    "medslm-gptq-q4_k_m": {"backend": "llamacpp", "steps": [GPTQ_GGUF | {"target": "q4_k_m"}]},
    "medslm-rtn-q4_k_m": {"backend": "llamacpp", "steps": [{"method": "quantize", "bits": 4, "target": "q4_k_m"}]},
    # llama.cpp's own quantizer at medslm's per-tensor types (--tensor-type overrides): the same types and
    # bytes as medslm-gptq-q4_0-mlp8, by rounding alone and with llama.cpp's calibration, an importance
    # matrix computed on GPTQ's calibration texts (same spec, same 64 samples)
    "gguf-q4_0-mlp8": {"backend": "llamacpp", "gguf": "q4_0", "gguf_types": MLP8_TYPES},
    "gguf-q4_0-mlp8-imatrix": {"backend": "llamacpp", "gguf": "q4_0", "gguf_types": MLP8_TYPES, **IMATRIX},
    "gguf-q4_0-imatrix": {"backend": "llamacpp", "gguf": "q4_0", **IMATRIX},
    "gguf-q4_k_m-imatrix": {"backend": "llamacpp", "gguf": "q4_k_m", **IMATRIX},
}
PEER = "gguf-own"  # llama.cpp's Q4_K_M of the base: the speed and size reference


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--pubmedqa", type=int, default=500)
    ap.add_argument("--medmcqa", type=int, default=500)
    ap.add_argument("--medppl", type=int, default=100)
    ap.add_argument("--output", default="runs/bench-compression")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per evaluation (default: all cores)")
    ap.add_argument("--split", default=None, help="held-out parts, e.g. pubmedqa=dev@50,medmcqa=dev@500 (a "
                    "fine-tuned --model: the parts it did not train on)")
    ap.add_argument("--calibration", default=None,
                    help="calibration texts of every calibrated variant (default pubmedqa,medquad; with "
                    "--split pubmedqa=dev@N, pubmedqa:fit@N,medquad, so no variant calibrates on what it is "
                    "scored on)")
    ap.add_argument("--pairs", default="gguf-q4_k_m:medslm-gptq-q4_k_m,gguf-q4_k_m:medslm-rtn-q4_k_m,"
                    "gguf-q4_0-imatrix:medslm-gptq-q4_0,gguf-q4_k_m-imatrix:medslm-gptq-q4_k_m,gguf-q4_0-mlp8:medslm-gptq-q4_0-mlp8,"
                    "gguf-q4_0-mlp8-imatrix:medslm-gptq-q4_0-mlp8,gguf-q4_0-mlp8-imatrix:medslm-gptq-q4_0-mlp8-rec",
                    help="PEER:VARIANT pairs compared item by item (McNemar / paired bootstrap), where both ran")
    ap.add_argument("--gguf", action="store_true",
                    help="also the model's own GGUF (Q4_K_M for gemma3-270m) on llama.cpp (needs medslm[llamacpp])")
    a = ap.parse_args()

    import yaml

    from medslm.pipeline import run_recipe
    from medslm.recipe_load import load_recipe

    names = a.variants.split(",")
    if a.gguf:
        names += [n for n in GGUF if n not in names]
    unknown = set(names) - set(VARIANTS) - set(GGUF)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {', '.join([*VARIANTS, *GGUF])}")
    split = dict(kv.split("=", 1) for kv in a.split.split(",")) if a.split else {}
    calibration = a.calibration
    if calibration is None and split.get("pubmedqa", "").startswith("dev@"):
        calibration = f"pubmedqa:{split['pubmedqa'].replace('dev@', 'fit@', 1)},medquad"
    variants = [{"name": n} | (dict(GGUF[n]) if n in GGUF else {"steps": VARIANTS[n]})
                | ({"dtype": DTYPES[n]} if n in DTYPES else {}) for n in names]
    if calibration:
        print(f"calibration: {calibration}")
        for v in variants:
            if "gguf_imatrix" in v:
                v["gguf_imatrix"] = calibration
            if "steps" in v:
                v["steps"] = [st | {"calibration": calibration} if "calibration" in st else st for st in v["steps"]]
    recipe = {"version": 1, "name": "bench-compression", "model": a.model,
              "eval": {"tasks": ["pubmedqa", "medmcqa", "medppl"],
                       "limit": {"pubmedqa": a.pubmedqa, "medmcqa": a.medmcqa, "medppl": a.medppl},
                       **({"split": split} if split else {})},
              "variants": variants}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(recipe, f)
    out = run_recipe(load_recipe(f.name), a.output, threads=a.threads)
    print((Path(out) / "report.md").read_text())
    lb = json.loads((Path(out) / "leaderboard.json").read_text())
    base = next(m for m in lb["models"] if m["label"] == "base")
    for m in lb["models"]:
        m["bytes_vs_base"] = round(m["bytes"] / base["bytes"], 4)
    peer = next((m for m in lb["models"] if m["label"] == PEER), None)
    if peer and peer.get("decode_tok_s"):
        print(f"\nagainst {PEER} (llama.cpp's Q4_K_M of the base), same threads, same run:")
        print(f"{'variant':28} {'MB':>8} {'x bytes':>8} {'tok/s':>8} {'x speed':>8}")
        for m in lb["models"]:
            tok = m.get("decode_tok_s") or 0
            m["speed_vs_peer"] = round(tok / peer["decode_tok_s"], 3) if tok else None
            print(f"{m['label']:28} {m['bytes'] / 1e6:8.1f} {m['bytes'] / peer['bytes']:8.3f} {tok:8.1f} "
                  f"{(m['speed_vs_peer'] or 0):8.2f}")
    for c in lb.get("paired", []):
        print(f"{c['model']}, {c['task']}: {c['words']}")
    lb["paired_peers"] = peer_pairs(Path(out), a.pairs)
    for c in lb["paired_peers"]:
        print(f"{c['model']} against {c['against']}, {c['task']}: {c['words']}")
    print(json.dumps({"bench": "compression", "models": [
        {k: m[k] for k in ("label", "chain", "bytes", "bytes_vs_base", "parameters", "peak_rss_bytes",
                           "decode_tok_s")} | {"speed_vs_peer": m.get("speed_vs_peer")}
        | {t: v["value"] for t, v in m["metrics"].items()}
        for m in lb["models"]], "paired_peers": lb["paired_peers"]}))


def peer_pairs(out: Path, pairs: str) -> list[dict]:
    """Each VARIANT against its PEER (not the base) on every task both have results for: the
    same-format comparison (medslm's integers against llama.cpp's quantization of the same weights)."""
    from medslm.evaluate.paired import compare
    from medslm.report.build import _aggregate

    rows = []
    for pair in filter(None, pairs.split(",")):
        peer, variant = pair.split(":")
        for f in sorted((out / "results").glob(f"{variant}__*.json")):
            task = f.stem.split("__", 1)[1]
            g = out / "results" / f"{peer}__{task}.json"
            if g.exists():
                c = compare(json.loads(g.read_text()), json.loads(f.read_text()), _aggregate(task))
                rows.append({"model": variant, "against": peer, "task": task, **c})
    return rows


if __name__ == "__main__":
    main()
