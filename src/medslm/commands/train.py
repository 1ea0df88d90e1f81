"""``medslm pretrain | finetune | merge --model REF --out DIR [--config FILE | flags]``."""

from __future__ import annotations

import argparse

from medslm.commands import examples

COMMON = [("--epochs", float, "passes over the data (default 1)"),
          ("--max-steps", int, "optimizer steps; overrides --epochs"),
          ("--batch-size", int, "default 4"), ("--grad-accum", int, "gradient accumulation steps (default 1)"),
          ("--lr", float, "learning rate"), ("--schedule", str, "cosine (default) | linear | constant"),
          ("--warmup", float, "warm-up fraction of the steps (default 0.03)"),
          ("--seq-len", int, "tokens per sequence (default 512)"),
          ("--check", str, "more evaluation sets the data must not overlap, e.g. medqa_4options:test"),
          ("--seed", int, "default 1234"), ("--checkpoint-every", int, "steps between checkpoints"),
          ("--device", str, "auto (default) | cpu | cuda")]
FLAGS = {
    "finetune": [("--data", str, "NAME[:SPLIT],... e.g. pubmedqa:fit@50,medmcqa:fit@500 (fit@N: all "
                                 "but a seeded held-out N, evaluated with --split dev@N)"),
                 ("--method", str, "full | lora (default) | qlora"),
                 ("--limit", int, "at most N examples per dataset (a seeded sample)"),
                 ("--lora-r", int, "LoRA rank (default 16)"), ("--lora-alpha", int, "default 32"),
                 ("--lora-targets", str, "all-linear (default) or module names, comma-separated")] + COMMON,
    "pretrain": [("--corpus", str, "NAME[:SPLIT],... documents from guidelines, medquad, pubmedqa, "
                                   "mimic3, medtext (default medquad:train)"),
                 ("--method", str, "full (default) | lora"),
                 ("--holdout", float, "fraction of documents held out for perplexity (default 0.05)")] + COMMON,
    "merge": [],
}
BOOLS = {"finetune": [("--merge", "merge the LoRA adapter into a new dense model"),
                      ("--no-explanations", "train on the answer only, without explanations/long answers"),
                      ("--chat-template", "wrap prompts in the model's chat template"),
                      ("--no-eos", "do not close answers with EOS (keeps the LM's EOS rate on plain text)"),
                      ("--allow-overlap", "train even if the data overlaps evaluation data (recorded)"),
                      ("--drop-overlap", "leave out training examples that overlap evaluation data")],
         "pretrain": [("--allow-overlap", "train even if the corpus overlaps evaluation data (recorded)"),
                      ("--drop-overlap", "leave out documents that overlap evaluation data")],
         "merge": []}
HELP = {"finetune": "supervised fine-tuning (full, LoRA, QLoRA) on medical instruction data",
        "pretrain": "continued pretraining on medical documents",
        "merge": "merge a LoRA adapter artifact into a new dense model"}
EXAMPLES = {
    "finetune": ["medslm finetune --model gemma3-270m --data pubmedqa:fit@50 --method lora --out runs/lora",
                 "medslm eval --model runs/lora --tasks pubmedqa --split dev@50",
                 "medslm finetune --model gemma3-270m --data medmcqa:fit@500 --method full --out runs/full"],
    "pretrain": ["medslm pretrain --model gemma3-270m --corpus medquad:train --max-steps 200 --out runs/cpt"],
    "merge": ["medslm merge --model runs/lora --out runs/lora-merged"],
}


def register(sub: argparse._SubParsersAction) -> None:
    for name, flags in FLAGS.items():
        p = sub.add_parser(name, help=HELP[name], description=HELP[name] + "; writes a new artifact.",
                           epilog=examples(*EXAMPLES[name], "medslm models info runs/...  (the chain of steps)"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--model", default="gemma3-270m")
        p.add_argument("--out", required=True, metavar="DIR", help="new artifact directory (must not exist)")
        p.add_argument("--config", metavar="FILE", help="a YAML file with the method's config")
        p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        for flag, typ, h in flags:
            p.add_argument(flag, type=typ, default=None, help=h,
                           dest="tuning" if flag == "--method" else None)
        for flag, h in BOOLS[name]:
            p.add_argument(flag, action="store_true", default=None, help=h)
        p.set_defaults(handler=cmd_train, method=name)


def cmd_train(args) -> int:
    from medslm.commands.compress import read_config
    from medslm.methods import compress

    cfg = read_config(args.config)
    cfg["method"] = args.method
    for flag, _, _ in FLAGS[args.method]:
        key = "tuning" if flag == "--method" else flag[2:].replace("-", "_")
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    for flag, _ in BOOLS[args.method]:
        key = flag[2:].replace("-", "_")
        if getattr(args, key):
            if key in ("no_explanations", "no_eos"):
                cfg[key[3:]] = False
            else:
                cfg[key] = True
    art = compress(args.model, cfg, args.out, overwrite=args.overwrite)
    st = art.meta.steps[-1]
    print(f"wrote {art.path}: {art.meta.parameters:,} parameters, {art.meta.bytes:,} bytes, "
          f"chain {art.step_chain()}" + ("  (adapter; base " + art.meta.extra["adapter"]["base"] + ")"
                                         if art.is_adapter else ""))
    keys = ("examples", "documents", "steps", "first_loss", "last_loss", "train_loss", "train_seconds",
            "tokens_per_s", "trainable_parameters", "peak_rss_mib", "held_out_ppl_before", "held_out_ppl_after")
    print("  " + ", ".join(f"{k}={st[k]}" for k in keys if st.get(k) is not None))
    c = st.get("contamination")
    if c:
        print(f"  contamination guard: checked {c['checked']}"
              + (f"; OVERLAP ALLOWED {c['overlap']}" if c.get("allowed") else
                 f"; dropped {c['dropped']} overlapping training examples" if c.get("dropped") else "; no overlap"))
    return 0
