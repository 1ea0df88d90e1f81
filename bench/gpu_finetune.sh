#!/usr/bin/env bash
# Fine-tuning on a GPU: LoRA of Gemma 3 270M on PubMedQA (the issue's GPU check), then LoRA and full
# fine-tuning on PubMedQA + MedMCQA fit parts, each evaluated on the dev parts.
#   MODEL=path/to/gemma.gguf MEDSLM_DATA_DIR=../shared/data bash bench/gpu_finetune.sh [OUTDIR]
# STEPS=N limits every training run to N steps and EVAL_LIMIT=N the evaluations (a smoke test on CPU).
set -euo pipefail
OUT=${1:-runs/gpu-finetune}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
M="python3 -m medslm"
steps=(); [ -n "${STEPS:-}" ] && steps=(--max-steps "$STEPS")
lim=(); [ -n "${EVAL_LIMIT:-}" ] && lim=(--limit "$EVAL_LIMIT")
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
t=$(date +%s); $M models pull "$MODEL"; echo "convert: $(( $(date +%s) - t )) s"
run() { local name=$1; shift; t=$(date +%s); $M finetune --model "$MODEL" --device "$DEVICE" --batch-size "${BATCH:-16}" --seq-len 512 "${steps[@]}" --out "$OUT/$name" --overwrite "$@" 2>&1 | grep -v -E "it/s\]|s/it\]|^\{'loss'" ; echo "$name: $(( $(date +%s) - t )) s"; }
run lora-pubmedqa --data pubmedqa:fit@50 --method lora --epochs 3 --lr 0.0003 --merge
run lora-both --data pubmedqa:fit@50,medmcqa:fit@500 --drop-overlap --method lora --epochs 2 --lr 0.0003 --merge
run full-both --data pubmedqa:fit@50,medmcqa:fit@500 --drop-overlap --method full --epochs 2 --lr 0.00003
for name in base lora-pubmedqa lora-both full-both; do
  model="$OUT/$name"; [ "$name" = base ] && model="$MODEL"
  $M eval --model "$model" --device "$DEVICE" --tasks pubmedqa,medmcqa --split pubmedqa=dev@50,medmcqa=dev@500 \
     "${lim[@]}" --no-decode-bench --output "$OUT/results" --label "$name" 2>&1 | grep -v -E "req/s\]|it/s\]"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for d in sorted(out.iterdir()):
    m = d / "medslm.json"
    if m.is_file():
        st = next(s for s in json.loads(m.read_text())["steps"] if s["name"] == "finetune")
        print(d.name, {k: st.get(k) for k in ("examples", "steps", "train_seconds", "tokens_seen", "tokens_per_s",
                                              "first_loss", "last_loss", "peak_gpu_mib", "trainable_parameters")})
for f in sorted((out / "results").glob("*.json")):
    r = json.loads(f.read_text())
    m = r["metrics"]
    print(f.name, r["task"]["split"], r["task"]["n"], {k: (round(v["value"], 4), v["ci95"] and [round(x, 4) for x in v["ci95"]]) for k, v in m.items() if k in ("acc", "macro_f1")})
PY
