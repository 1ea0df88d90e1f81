"""``medslm rag build|query|eval``: retrieval indexes for ``medslm serve --rag``."""

from __future__ import annotations

import argparse

from medslm.commands import examples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rag", help="build and query retrieval indexes (MedQuAD, PubMed abstracts, guidelines)",
                       description="Retrieval indexes with checkable citations: 1,000-character chunks with "
                                   "200 overlap, BM25 (bm25s), optional MiniLM dense vectors, reciprocal-rank fusion.",
                       epilog=examples("medslm rag build --sources medquad --out runs/medquad-index",
                                       "medslm rag query runs/medquad-index 'What causes scurvy?' --k 5",
                                       "medslm rag eval runs/medquad-index --n 500",
                                       "medslm serve --model gemma3-270m --rag runs/medquad-index"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="rag_command", metavar="SUBCOMMAND")
    b = s.add_parser("build", help="build an index")
    b.add_argument("--sources", default="medquad", help="comma-separated: medquad, pubmed, or guideline .jsonl files")
    b.add_argument("--out", required=True)
    b.add_argument("--dense", action="store_true", help="also embed chunks with all-MiniLM-L6-v2")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(handler=cmd_build)
    q = s.add_parser("query", help="print the top chunks for a question")
    q.add_argument("index")
    q.add_argument("question")
    q.add_argument("--k", type=int, default=5)
    q.add_argument("--mode", default="bm25", help="bm25 | dense | fusion")
    q.set_defaults(handler=cmd_query)
    e = s.add_parser("eval", help="recall@k of each MedQuAD question's own document, and latency")
    e.add_argument("index")
    e.add_argument("--n", type=int, default=500, help="questions (a seeded sample)")
    e.add_argument("--k", type=int, default=5)
    e.add_argument("--seed", type=int, default=1234)
    e.add_argument("--modes", default="bm25", help="comma-separated: bm25, dense, fusion")
    e.set_defaults(handler=cmd_eval)
    p.set_defaults(handler=lambda a: p.print_help() or 0)


def cmd_build(args) -> int:
    import itertools

    from medslm.rag.index import build, source_docs

    srcs = [x.strip() for x in args.sources.split(",") if x.strip()]
    docs = itertools.chain.from_iterable(source_docs(x) for x in srcs)
    ix = build(docs, args.out, dense=args.dense, sources=srcs, overwrite=args.overwrite)
    m = ix.stats()
    print(f"wrote {args.out}: {m['documents']:,} documents, {m['chunks']:,} chunks, "
          f"{'bm25 + dense' if m['dense'] else 'bm25'}, built in {m['build_seconds']} s")
    return 0


def cmd_query(args) -> int:
    from medslm.rag.index import Index

    for i, h in enumerate(Index(args.index).search(args.question, k=args.k, mode=args.mode), 1):
        print(f"[{i}] {h.score:.3f}  {h.title}  {h.url}\n    {h.snippet[:200]}")
    return 0


def cmd_eval(args) -> int:
    import json

    from medslm.rag.evaluate import recall_at_k

    res = recall_at_k(args.index, n=args.n, k=args.k, seed=args.seed, modes=args.modes.split(","))
    print(json.dumps(res, indent=2))
    return 0
