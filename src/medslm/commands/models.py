"""``medslm models ls | info REF | pull REF``."""

from __future__ import annotations

import argparse
import json

from medslm.commands import examples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, inspect and fetch models",
                       description="List presets, inspect a model or artifact, fetch/convert a model.",
                       epilog=examples("medslm models ls", "medslm models pull gemma3-270m",
                                       "medslm models info gemma3-270m",
                                       "medslm models info ./runs/q4  (shows the chain of steps)"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    ls = s.add_parser("ls", help="list presets")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_ls)
    info = s.add_parser("info", help="describe a model or artifact (does not download or convert)")
    info.add_argument("ref")
    info.add_argument("--json", action="store_true")
    info.add_argument("--verify", action="store_true", help="recompute the content hash (file sizes and safetensors headers are always checked)")
    info.set_defaults(handler=cmd_info)
    pull = s.add_parser("pull", help="download or convert a model into the cache (no-op when present)")
    pull.add_argument("ref")
    pull.set_defaults(handler=cmd_pull)


def cmd_ls(args) -> int:
    from medslm.models.presets import PRESETS

    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(p) for p in PRESETS.values()], indent=2))
        return 0
    rows = [("name", "architecture", "params", "license", "how to get")]
    for p in PRESETS.values():
        rows.append((p.name, p.architecture, p.parameters, p.license.split(" (")[0],
                     p.how_to_get.split(":")[0]))
    _table(rows)
    return 0


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def cmd_info(args) -> int:
    from medslm.errors import MedslmError
    from medslm.models.loading import resolve

    r = resolve(args.ref, pull=False)
    if r.path is None and r.kind == "hub":
        from medslm.models.loading import hub_config

        cfg = hub_config(args.ref)
        print(f"model        {args.ref} (on the hub, not downloaded; `medslm models pull {args.ref}`)")
        print(f"architecture {(cfg.get('architectures') or ['?'])[0]}")
        print(f"model_type   {cfg.get('model_type', '?')}")
        return 0
    if r.path is None:
        where = f"preset {r.preset.name}" if r.preset else r.kind
        msg = f"{args.ref}: {where} is not in the local cache yet; run `medslm models pull {args.ref}`"
        if r.preset:
            msg += f" ({r.preset.how_to_get}; license: {r.preset.license})"
        raise MedslmError(msg)
    art = r.artifact()
    art.verify() if args.verify else art.check_files()
    d = art.describe()
    if r.preset:
        d["preset"] = {"name": r.preset.name, "license": r.preset.license, "source": r.preset.source}
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    m = art.meta
    print(f"model        {args.ref}")
    print(f"path         {art.path}")
    print(f"architecture {m.architecture}")
    print(f"parameters   {m.parameters:,}" if m.parameters else "parameters   unknown (not a medslm artifact)")
    print(f"bytes        {m.bytes:,} ({_human(m.bytes)})")
    print(f"dtype        {m.dtype}")
    print(f"hash         {m.content_hash or '(not recorded)'}" + ("  verified" if args.verify else ""))
    print(f"source       {m.source}")
    if r.preset:
        print(f"license      {r.preset.license}")
    print(f"chain        {art.step_chain()}")
    for i, step in enumerate(m.steps, 1):
        cfg = ", ".join(f"{k}={v}" for k, v in step.get("config", {}).items())
        print(f"  {i}. {step.get('name')}({cfg})  medslm {step.get('medslm_version', '?')}")
    if m.extra:
        for k, v in m.extra.items():
            print(f"  {k}: {v}")
    return 0


def cmd_pull(args) -> int:
    from medslm.models.loading import resolve

    before = resolve(args.ref, pull=False)
    if before.path is not None:
        print(f"{args.ref}: already present at {before.path}")
        return 0
    r = resolve(args.ref, pull=True)
    print(f"{args.ref}: ready at {r.path}")
    return 0
