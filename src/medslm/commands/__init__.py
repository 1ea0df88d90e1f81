"""CLI subcommands. Each module defines ``register(subparsers)``; no heavy imports at module level."""

import argparse


def add_common_model_args(p: argparse.ArgumentParser, default: str | None = "gemma3-270m") -> None:
    p.add_argument("--model", default=default, help="model reference: directory, .gguf, preset or org/name"
                   + (f" (default {default})" if default else ""))


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {x}" for x in lines)
