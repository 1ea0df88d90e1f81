"""``medslm data ls | show | stats | fetch | overlap``."""

from __future__ import annotations

import argparse
import json

from medslm.commands import examples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, inspect, fetch and compare datasets",
                       description="Datasets resolve from --data PATH, $MEDSLM_DATA_DIR/<name>/, "
                       "the medslm cache, then upstream (downloaded once, checksummed).",
                       epilog=examples("medslm data ls", "medslm data show pubmedqa --n 1",
                                       "medslm data stats medmcqa --model gemma3-270m",
                                       "medslm data overlap medquad:train medquad:test"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="data_cmd", metavar="ACTION", required=True)
    ls = s.add_parser("ls", help="every dataset: kind, license, records, source, available now")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_ls)
    for name, fn, helptext in (("show", cmd_show, "print records"),
                               ("stats", cmd_stats, "counts, label balance, lengths"),
                               ("fetch", cmd_fetch, "download into the cache (once)")):
        c = s.add_parser(name, help=helptext)
        c.add_argument("name")
        c.add_argument("--split", default=None)
        c.add_argument("--data", default=None, metavar="PATH", help="read from this file/folder")
        c.add_argument("--lenient", action="store_true", help="skip bad records and report them")
        if name == "show":
            c.add_argument("--n", type=int, default=3)
            c.add_argument("--json", action="store_true")
        if name == "stats":
            c.add_argument("--model", default=None, help="count lengths in this model's tokens")
        c.set_defaults(handler=fn)
    o = s.add_parser("overlap", help="exact and near-duplicate examples between two datasets/splits")
    o.add_argument("a", help="NAME[:SPLIT]")
    o.add_argument("b", help="NAME[:SPLIT]")
    o.add_argument("--threshold", type=float, default=0.8, help="Jaccard of word 5-grams (default 0.8)")
    o.add_argument("--show", type=int, default=10)
    o.set_defaults(handler=cmd_overlap)


def cmd_ls(args) -> int:
    from medslm.data import DATASETS
    from medslm.data.sources import find_root
    from medslm.errors import DataError

    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        try:
            where = str(find_root(spec, fetch=False))
        except DataError:
            where = ""
        rows.append({"name": name, "kind": spec.kind, "license": spec.license, "records": spec.records,
                     "source": spec.upstream + (" (credentialed)" if spec.credentialed else ""),
                     "available": where or "no"})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from medslm.commands.models import _table

    _table([("name", "kind", "records", "license", "source", "available")] +
           [(r["name"], r["kind"], r["records"], r["license"][:40], r["source"][:45],
             "yes" if r["available"] != "no" else "no") for r in rows])
    return 0


def _load(args):
    from medslm.data import load_dataset

    return load_dataset(args.name, split=args.split, path=args.data, lenient=args.lenient)


def cmd_show(args) -> int:
    ex = _load(args)
    print(f"# {args.name}: {len(ex)} records" + (f" in split {args.split}" if args.split else "")
          + f" from {ex.root}")
    for e in ex[: args.n]:
        d = e.to_dict()
        if args.json:
            print(json.dumps(d, ensure_ascii=False))
            continue
        print("-" * 72)
        for k, v in d.items():
            if k == "meta":
                v = {mk: mv for mk, mv in v.items() if mv not in (None, "", [], {})}
            s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
            print(f"{k:9} {s[:600]}{' ...' if len(s) > 600 else ''}")
    return 0


def _main_text(e) -> str:
    parts = [getattr(e, a, "") for a in ("case", "context", "question", "text")]
    return "\n".join(p for p in parts if p)


def cmd_stats(args) -> int:
    from collections import Counter

    import numpy as np

    ex = _load(args)
    print(f"{args.name}: {len(ex)} records from {ex.root}")
    print("splits   " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(e.split for e in ex).items())))
    labels = Counter()
    for e in ex:
        if getattr(e, "options", None) is not None and e.answer is not None:
            labels[e.options[e.answer] if len(e.options) <= 3 else "ABCDEFGH"[e.answer]] += 1
        elif getattr(e, "label", None) is not None:
            labels[str(e.label)] += 1
        elif hasattr(e, "answer") and isinstance(e.answer, str):
            labels["answered" if e.answer.strip() else "unanswered"] += 1
    if labels:
        tot = sum(labels.values())
        print("labels   " + ", ".join(f"{k} {v} ({100 * v / tot:.1f}%)" for k, v in labels.most_common()))
    if args.model:
        from transformers import AutoTokenizer

        from medslm.models.loading import resolve

        tok = AutoTokenizer.from_pretrained(resolve(args.model).artifact().path)
        count, unit = (lambda t: len(tok(t, add_special_tokens=False).input_ids)), f"{args.model} tokens"
    else:
        count, unit = (lambda t: len(t.split())), "words (pass --model for tokens)"
    lens = np.array([count(_main_text(e)) for e in ex])
    if len(lens):
        print(f"length   in {unit}: mean {lens.mean():.0f}, p50 {np.percentile(lens, 50):.0f}, "
              f"p95 {np.percentile(lens, 95):.0f}, max {lens.max()}")
    if args.name == "mimic3":
        from medslm.data.mimic3 import tables

        print("tables   " + ", ".join(f"{k} {v}" for k, v in tables(ex.root).items()))
    return 0


def cmd_fetch(args) -> int:
    from medslm.data import get_spec
    from medslm.data.sources import find_root

    root = find_root(get_spec(args.name), args.data)
    ex = _load(args)
    print(f"{args.name}: {len(ex)} records at {root}")
    return 0


def _parse_ref(ref: str):
    from medslm.data import load_dataset

    name, _, split = ref.partition(":")
    return load_dataset(name, split=split or None)


def cmd_overlap(args) -> int:
    from collections import Counter

    from medslm.data.overlap import find_overlap

    a, b = _parse_ref(args.a), _parse_ref(args.b)
    same = args.a == args.b
    matches = find_overlap(a, a if same else b, threshold=args.threshold)
    kinds = Counter(m.kind for m in matches)
    ids = {m.a for m in matches}
    print(f"{args.a} ({len(a)}) vs {args.b} ({len(b)}): {len(ids)} examples of {args.a} overlap "
          f"({kinds.get('exact', 0)} exact pairs, {kinds.get('near', 0)} near pairs at Jaccard >= "
          f"{args.threshold})")
    for m in matches[: args.show]:
        print(f"  {m.kind:5} {m.similarity:.3f}  {m.a}  ~  {m.b}")
    return 1 if matches else 0
