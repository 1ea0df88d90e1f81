"""How much of a fine-tune a quantized GGUF keeps: for each tensor type of the file, the share of
the fine-tune's weight change (merged - base) that the file's weights still carry, the least-squares
coefficient <q - b, m - b> / |m - b|^2 (1: kept, 0: rounded back to the base), and the rounding error
|q - m|^2 relative to |m - b|^2. A base that already sits on the file's grid (the embedded Gemma 3
270M is a dequantized Q4_K_M) pulls a small merged delta back onto its own values.

    python bench/delta_kept.py BASE_DIR MERGED_DIR FILE.gguf [FILE.gguf ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# llama.cpp's names of the block tensors -> transformers' (Llama-style decoders, Gemma 3 included)
NAMES = {"ffn_down": "mlp.down_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj"}


def kept(base: dict, merged: dict, path: Path) -> dict[str, dict]:
    import gguf

    r = gguf.GGUFReader(path)
    acc: dict[str, list] = {}
    for t in r.tensors:
        p = t.name.split(".")
        if p[0] != "blk" or p[2] not in NAMES:
            continue
        key = f"model.layers.{p[1]}.{NAMES[p[2]]}.weight"
        if key not in base:
            raise SystemExit(f"{path}: {t.name} has no {key} in the base (not a Llama-style decoder?)")
        b = base[key].double().numpy().ravel()
        d = merged[key].double().numpy().ravel() - b
        e = gguf.dequantize(t.data, t.tensor_type).astype(np.float64).ravel() - b
        if d.size != e.size:  # q/k rows permuted by the converter for some architectures
            raise SystemExit(f"{path}: {t.name} has {e.size} weights, the base {d.size}")
        a = acc.setdefault(t.tensor_type.name, [0.0, 0.0, 0.0, 0])
        a[0] += d @ e
        a[1] += d @ d
        a[2] += ((e - d) ** 2).sum()
        a[3] += d.size
    return {k: {"weights": n, "delta_kept": de / dd, "error_vs_delta": err / dd}
            for k, (de, dd, err, n) in sorted(acc.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("merged", type=Path)
    ap.add_argument("gguf", type=Path, nargs="+")
    a = ap.parse_args()
    from safetensors.torch import load_file

    base, merged = load_file(a.base / "model.safetensors"), load_file(a.merged / "model.safetensors")
    for f in a.gguf:
        for k, v in kept(base, merged, f).items():
            print(f"{f.name}  {k:5} {v['weights']:>11,} weights  delta kept {v['delta_kept']:6.3f}  "
                  f"rounding error / delta {v['error_vs_delta']:8.2f}")


if __name__ == "__main__":
    main()
