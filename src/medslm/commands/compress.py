"""``medslm quantize | prune | trim --model REF --out DIR [--config FILE | flags]``."""

from __future__ import annotations

import argparse

from medslm.commands import examples

FLAGS = {
    "quantize": [("--bits", int, "4 or 8 (default 8)"), ("--group-size", int, "default 128"),
                 ("--algorithm", str, "rtn (default) or gptq (calibrated; --calibration, --samples)"),
                 ("--calibration", str, "gptq: datasets (comma-separated) or a .txt file (default pubmedqa,medquad)"),
                 ("--samples", int, "gptq: calibration texts (default 64)"),
                 ("--asymmetric", bool, "unsigned integers with a zero point per group (default: symmetric)"),
                 ("--clip-search", bool, "search each group's range for the least rounding error"),
                 ("--act-order", bool, "gptq: columns in order of decreasing Hessian diagonal"),
                 ("--sequential", bool, "gptq: block by block, on the outputs of the quantized blocks"),
                 ("--bits8", str, "with --bits 4: comma-separated module patterns kept at 8 bits, e.g. '*.v_proj,*.down_proj'"),
                 ("--skip", str, "comma-separated module patterns kept in full precision (default lm_head)"),
                 ("--embeddings", str, "keep (default) or int8 (input embedding and tied head as int8)")],
    "prune": [("--algorithm", str, "magnitude | wanda | sparsegpt | depth | width | heads (default wanda)"),
              ("--sparsity", float, "fraction removed (default 0.5)"),
              ("--pattern", str, "N:M semi-structured, e.g. 2:4"),
              ("--calibration", str, "datasets (comma-separated), generic (non-medical English) or a .txt file (default pubmedqa,medquad)"),
              ("--samples", int, "calibration texts (default 64)"), ("--seq-len", int, "default 256")],
    "distill": [("--teacher", str, "teacher model reference"),
                ("--mode", str, "logit (default) or sequence"),
                ("--corpus", str, "datasets (comma-separated) or a .txt file (default pubmedqa,medquad)"),
                ("--steps", int, "optimizer steps (default 100)"), ("--batch-size", int, "default 2"),
                ("--seq-len", int, "default 128"), ("--lr", float, "default 5e-5"),
                ("--temperature", float, "default 2.0"), ("--alpha", float, "KD weight vs CE (default 0.5)")],
    "trim": [("--corpus", str, "datasets (comma-separated) or a .txt file (default pubmedqa,medquad,medmcqa)"),
             ("--min-count", int, "keep tokens used at least this often (default 1)")],
}
HELP = {"quantize": "weight-only int8/int4 quantization", "prune": "unstructured, N:M, depth, width (MLP) or attention-head pruning",
        "distill": "knowledge distillation from a teacher (logit or sequence-level)",
        "trim": "trim the vocabulary to a domain corpus"}
EXAMPLES = {"quantize": ["medslm quantize --model gemma3-270m --bits 4 --out runs/q4"],
            "prune": ["medslm prune --model gemma3-270m --algorithm wanda --sparsity 0.5 --out runs/wanda50",
                      "medslm prune --model gemma3-270m --algorithm depth --sparsity 0.25 --out runs/depth25"],
            "trim": ["medslm trim --model gemma3-270m --out runs/trim"],
            "distill": ["medslm distill --model runs/depth25 --teacher gemma3-270m --steps 200 --out runs/d25kd"]}


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
            if typ is bool:
                p.add_argument(flag, action="store_true", default=None, help=h)
            else:
                p.add_argument(flag, type=typ, default=None, help=h)
        p.set_defaults(handler=cmd_compress, method=name)


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
    from medslm.methods import compress

    cfg = read_config(args.config)
    cfg["method"] = args.method
    for flag, _, _ in FLAGS[args.method]:
        key = flag[2:].replace("-", "_")
        v = getattr(args, key)
        if v is None:
            continue
        if key == "asymmetric":
            cfg["symmetric"] = False
        else:
            cfg[key] = tuple(s.strip() for s in v.split(",")) if key in ("skip", "bits8") else v
    art = compress(args.model, cfg, args.out, overwrite=args.overwrite)
    st = art.meta.steps[-1]
    facts = {k: v for k, v in st.items() if k not in ("name", "config", "medslm_version", "time",
                                                         "input_hash", "block_influence")}
    print(f"wrote {art.path}: {art.meta.parameters:,} parameters, {art.meta.bytes:,} bytes, "
          f"chain {art.step_chain()}")
    print("  " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return 0
