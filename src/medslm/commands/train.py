"""``medslm pretrain | finetune | merge --model REF --out DIR [--config FILE | flags]``."""

from __future__ import annotations

import argparse

from medslm.commands import examples

METHODS = ("finetune", "pretrain", "merge")
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


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def register(sub: argparse._SubParsersAction) -> None:
    from medslm.commands.compress import add_artifact_args

    for name in METHODS:
        p = sub.add_parser(name, help=HELP[name], description=HELP[name] + "; writes a new artifact. "
                           "Flags are the method's config fields (`--config FILE` takes them as YAML).",
                           epilog=examples(*EXAMPLES[name], "medslm models info runs/...  (the chain of steps)"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_artifact_args(p)
        p.set_defaults(handler=cmd_train, method=name)
        _PARSERS[name] = p


def complete(command: str) -> None:
    from medslm.commands.method_flags import add_flags

    add_flags(_PARSERS[command], command)


def cmd_train(args) -> int:
    from medslm.commands.compress import read_config
    from medslm.commands.method_flags import config_from_args
    from medslm.methods import compress

    cfg = config_from_args(args, args.method, read_config(args.config))
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
