"""The ``medslm`` command: a thin layer over the Python API.

Subcommands live in ``medslm.commands.<name>``; each module only defines its arguments at import
time (no torch, no transformers), so ``medslm --help`` is fast. Heavy imports happen inside the
handlers, after parsing. Errors a user can fix (:class:`medslm.errors.MedslmError`) print one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; order is the order shown in --help
COMMANDS = {
    "run": "medslm.commands.run",
    "models": "medslm.commands.models",
    "data": "medslm.commands.data",
    "eval": "medslm.commands.eval",
    "quantize": "medslm.commands.compress",
    "prune": "medslm.commands.compress",
    "trim": "medslm.commands.compress",
    "distill": "medslm.commands.compress",
    "pretrain": "medslm.commands.train",
    "finetune": "medslm.commands.train",
    "merge": "medslm.commands.train",
    "export": "medslm.commands.export",
    "report": "medslm.commands.run",
    "serve": "medslm.commands.serve",
    "rag": "medslm.commands.rag",
    "bench": "medslm.commands.bench",
}


def build_parser() -> argparse.ArgumentParser:
    from medslm import __version__

    parser = argparse.ArgumentParser(
        prog="medslm",
        description="Build, compress, measure and serve small language models for healthcare.",
        epilog="Run `medslm COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"medslm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for module in COMMANDS.values():
        if module in seen:
            continue
        seen.add(module)
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from medslm.errors import MedslmError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except MedslmError as e:
        print(f"medslm: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("medslm: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
