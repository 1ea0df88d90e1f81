"""The ``medslm`` command: a thin layer over the Python API.

Subcommands live in ``medslm.commands.<name>``; each module only defines its arguments at import
time (no torch, no transformers), so ``medslm --help`` is fast. Heavy imports happen inside the
handlers, after parsing. Errors a user can fix (:class:`medslm.errors.MedslmError`) print one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

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
    "card": "medslm.commands.share",
    "push": "medslm.commands.share",
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
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = next((a for a in argv if not a.startswith("-")), None)
    mod = importlib.import_module(COMMANDS[cmd]) if cmd in COMMANDS else None
    if mod is not None and hasattr(mod, "complete"):  # flags built from configs, for this command only
        try:
            mod.complete(cmd)
        except MedslmError as e:
            print(f"medslm: error: {e}", file=sys.stderr)
            return e.exit_code
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
    except OSError as e:  # the filesystem said no (disk full, permissions, a path that vanished)
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"medslm: error: cannot access{where}: {e.strerror or e}; check the path, its permissions "
              "and free space, then rerun (finished work is kept)", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line here, the traceback in a file
        log = crash_log(e)
        print(f"medslm: unexpected error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}\n"
              f"medslm: this is a bug in medslm; the full traceback is in {log}; please report it with "
              "that file", file=sys.stderr)
        return 1


def crash_log(e: BaseException) -> str:
    """Write the traceback of ``e`` to a file under the medslm cache (or the temp folder)."""
    import datetime
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(e))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (_cache_logs(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            f = folder / f"medslm-crash-{stamp}-{os.getpid()}.txt"
            f.write_text(" ".join(sys.argv) + "\n\n" + text)
            return str(f)
        except OSError:
            continue
    return "(no writable folder; traceback follows)\n" + text


def _cache_logs() -> Path:
    from medslm import settings

    return settings.cache_dir() / "logs"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
