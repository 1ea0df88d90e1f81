"""CLI subcommands. Each module defines ``register(subparsers)``; no heavy imports at module level."""

import argparse


def add_common_model_args(p: argparse.ArgumentParser, default: str | None = "gemma3-270m") -> None:
    p.add_argument("--model", default=default, help="model reference: directory, .gguf, preset or org/name"
                   + (f" (default {default})" if default else ""))


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {x}" for x in lines)


def threads_arg(text: str) -> int:
    """``--threads N``: 1 up to the cores this process may use (more oversubscribes them: OpenMP
    threads that share a core run far slower than fewer threads)."""
    from medslm.system import usable_cores

    n = int_arg(text)
    cores = usable_cores()
    if not 1 <= n <= cores:
        raise argparse.ArgumentTypeError(f"{text}: choose 1 to {cores} (the cores this process may use); "
                                         "more threads than cores run slower, not faster")
    return n


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def nonneg_int(text: str) -> int:
    n = int_arg(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return n


def positive_int(text: str) -> int:
    n = int_arg(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return n
