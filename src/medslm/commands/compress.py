"""``medslm quantize | prune | trim --model REF --out DIR [--config FILE | flags]``."""

from __future__ import annotations

import argparse

from medslm.commands import examples

METHODS = ("quantize", "prune", "distill", "trim")
HELP = {"quantize": "weight-only int8/int4 quantization", "prune": "unstructured, N:M, depth, width (MLP) or attention-head pruning",
        "distill": "knowledge distillation from a teacher (logit or sequence-level)",
        "trim": "trim the vocabulary to a domain corpus"}
EXAMPLES = {"quantize": ["medslm quantize --model gemma3-270m --bits 4 --out runs/q4",
                         "medslm quantize --model gemma3-270m --bits 4 --algorithm gptq --target gguf --act-order "
                         "--sequential --out runs/q4-gptq",
                         "medslm export --model runs/q4-gptq --out runs/q4-gptq.gguf  (its own integers, Q4_0)",
                         "medslm quantize --model gemma3-270m --bits 4 --algorithm gptq --target q4_k_m --act-order "
                         "--sequential --out runs/q4km  (llama.cpp's Q4_K_M types, medslm's integers)"],
            "prune": ["medslm prune --model gemma3-270m --algorithm wanda --sparsity 0.5 --out runs/wanda50",
                      "medslm prune --model gemma3-270m --algorithm depth --sparsity 0.25 --out runs/depth25"],
            "trim": ["medslm trim --model gemma3-270m --out runs/trim"],
            "distill": ["medslm distill --model runs/depth25 --teacher gemma3-270m --steps 200 --out runs/d25kd"]}


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def register(sub: argparse._SubParsersAction) -> None:
    for name in METHODS:
        p = sub.add_parser(name, help=HELP[name], description=HELP[name] + "; writes a new artifact. "
                           "Flags are the method's config fields (`--config FILE` takes them as YAML).",
                           epilog=examples(*EXAMPLES[name], "medslm models info runs/...  (the chain of steps)"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_artifact_args(p)
        p.set_defaults(handler=cmd_compress, method=name)
        _PARSERS[name] = p


def add_artifact_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--out", required=True, metavar="DIR", help="new artifact directory (must not exist)")
    p.add_argument("--config", metavar="FILE", help="a YAML file with the method's config")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a medslm artifact")


def complete(command: str) -> None:
    """Add the method's config flags to its subparser (only for the command being run)."""
    from medslm.commands.method_flags import add_flags

    add_flags(_PARSERS[command], command)


def read_config(path: str | None) -> dict:
    from medslm.errors import ConfigError

    if not path:
        return {}
    import yaml

    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config {path}: {e}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config keys")
    return cfg


def cmd_compress(args) -> int:
    from medslm.commands.method_flags import config_from_args
    from medslm.methods import compress

    cfg = config_from_args(args, args.method, read_config(args.config))
    art = compress(args.model, cfg, args.out, overwrite=args.overwrite)
    st = art.meta.steps[-1]
    facts = {k: v for k, v in st.items() if k not in ("name", "config", "medslm_version", "time",
                                                         "input_hash", "block_influence")}
    print(f"wrote {art.path}: {art.meta.parameters:,} parameters, {art.meta.bytes:,} bytes, "
          f"chain {art.step_chain()}")
    print("  " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return 0
