"""Peak memory of one LoRA training step with the LM head's loss whole or in chunks.

    python bench/head_chunk_memory.py            # Gemma 3 270M, 8 rows x 512 tokens, 450 answer tokens each

The worst step `recipes/medical-assistant.yaml` makes with `batches: labels` (eight long free-text
answers together): medslm's answer-only loss applies Gemma's 262k-token head to every answer
position, 1 MiB of fp32 logits each. Each mode runs in a fresh process (peak RSS is per process);
the same loss is printed for both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STEP = r"""
import json, resource, sys, time, torch
from peft import LoraConfig, get_peft_model
from medslm.methods.base import load_dense
from medslm.models.loading import resolve
from medslm.train import engine
chunk, rows, seq, prompt = (int(x) for x in sys.argv[1:5])
engine.HEAD_CHUNK = chunk or 10**9
m, tok = load_dense(resolve(sys.argv[5]).artifact(), "bench")
m = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
m.train()
ids = torch.randint(10, 20000, (rows, seq), generator=torch.Generator().manual_seed(0))
lab = ids.clone(); lab[:, :prompt] = -100
t = time.perf_counter()
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = engine.answer_loss(m, {"input_ids": ids, "labels": lab, "attention_mask": torch.ones_like(ids)})
loss.backward()
print(json.dumps({"head_chunk": chunk, "loss": round(float(loss), 4), "step_s": round(time.perf_counter() - t, 1),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))
"""

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=62, help="prompt tokens per row (the rest is answer)")
    a = ap.parse_args()
    out = {}
    for chunk in (0, 1024):
        r = subprocess.run([sys.executable, "-c", STEP, str(chunk), str(a.rows), str(a.seq_len), str(a.prompt), a.model],
                           capture_output=True, text=True, check=True)
        out[chunk] = json.loads(r.stdout.strip().splitlines()[-1])
        print(("whole head   " if chunk == 0 else "chunks of 1024") + f": peak RSS {out[chunk]['peak_rss_gib']} GiB, "
              f"step {out[chunk]['step_s']} s, loss {out[chunk]['loss']}")
    print(f"chunked / whole peak RSS: {out[1024]['peak_rss_gib'] / out[0]['peak_rss_gib']:.2f}")
