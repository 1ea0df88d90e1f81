"""``medslm card DIR`` (rebuild a model card) and ``medslm push DIR|FILE.gguf REPO_ID`` (the Hub)."""

from __future__ import annotations

import argparse

from medslm.commands import examples


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("card", help="rebuild a model's Hub card (README.md) from its provenance and results",
                       description="Writes README.md (an artifact) or FILE.gguf.README.md (a GGUF) in the Hub's "
                                   "model-card format; results are the JSONs in --results whose model hash is this "
                                   "model's.",
                       epilog=examples("medslm card runs/medical-assistant/assistant --results runs/medical-assistant/results"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("model", help="a medslm artifact directory or an exported .gguf")
    c.add_argument("--results", default=None, metavar="DIR", help="result JSONs to put in the card's model-index")
    c.set_defaults(handler=cmd_card)
    p = sub.add_parser("push", help="upload a model and its card to the Hugging Face Hub",
                       description="huggingface_hub's upload; the token from --token, HF_TOKEN or `hf auth login`. "
                                   "Models whose provenance forbids redistribution (credentialed or "
                                   "evaluation-only data, a credentialed base) are refused with the reason.",
                       epilog=examples("medslm push runs/q4.gguf my-org/gemma3-270m-medical-q4 --results runs/r"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a medslm artifact directory or an exported .gguf")
    p.add_argument("repo_id", help="ORG/NAME on the Hub")
    p.add_argument("--results", default=None, metavar="DIR", help="result JSONs for the card")
    p.add_argument("--token", default=None, help="a Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--public", action="store_true", help="create the repository public (default private)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(handler=cmd_push)


def cmd_card(args) -> int:
    from medslm.share.card import write_card

    out, _ = write_card(args.model, args.results)
    print(f"wrote {out}")
    return 0


def cmd_push(args) -> int:
    from medslm.share.push import push

    r = push(args.model, args.repo_id, token=args.token, private=not args.public, results=args.results,
             message=args.message)
    print(f"pushed {args.model} to {r['repo_id']} ({r['commit']})")
    return 0
