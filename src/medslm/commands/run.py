"""``medslm run [RECIPE]`` (default: the quickstart) and ``medslm report RESULTS_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medslm.commands import examples, threads_arg


def default_recipe() -> Path:
    return Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a recipe: compress, evaluate, report (default: the quickstart)",
                       description="Run a recipe (YAML): build each variant's artifacts (cached by input "
                       "hash and step config), evaluate them, write the report. Rerunning skips what "
                       "is done; an interrupted run resumes.",
                       epilog=examples("medslm run", "medslm run recipes/domain-prune-distill.yaml",
                                       "medslm run my.yaml --output runs/mine --check",
                                       "medslm run recipes/trim-cost.yaml --variants base,trim",
                                       "medslm run recipes/task-families.yaml --ray   (variants as Ray tasks)"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", default=None, help="recipe file (default: quickstart)")
    p.add_argument("--output", default=None, metavar="DIR", help="default runs/<recipe name>")
    p.add_argument("--threads", type=threads_arg, default=None)
    p.add_argument("--variants", default=None, metavar="NAME,...",
                   help="run only these variants of the recipe (e.g. base and a new one); the report "
                        "shows every variant with results in the output folder")
    p.add_argument("--check", action="store_true", help="validate the recipe and stop")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the variants as Ray tasks (each reserving its `cpus:`/`gpus:`): on a local "
                        "cluster of this machine, or the cluster at ADDRESS (artifacts and results on "
                        "shared storage)")
    p.set_defaults(handler=cmd_run)
    r = sub.add_parser("report", help="build report.html, report.md and leaderboard.json from results",
                       epilog=examples("medslm report runs/quickstart/results"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("results", help="a directory of result JSON files")
    r.add_argument("--output", default=None, metavar="DIR", help="default: beside the results")
    r.set_defaults(handler=cmd_report)


def cmd_run(args) -> int:
    from medslm.pipeline import run_output, run_recipe
    from medslm.recipe_load import load_recipe

    path = Path(args.recipe) if args.recipe else default_recipe()
    recipe = load_recipe(path)
    run_output(recipe, args.output)
    only = None if args.variants is None else [n.strip() for n in args.variants.split(",") if n.strip()]
    if only is not None:
        from medslm.recipe import select_variants

        select_variants(recipe, only)  # an unknown name fails here, before any work (--check too)
    if args.check:
        from medslm.held_out import describe, overlaps

        print(f"{path}: valid ({len(recipe.variants)} variants, tasks {', '.join(recipe.eval.tasks)})")
        for o in overlaps(recipe):
            print(f"  warning: {describe(o)}")
        return 0
    out = run_recipe(recipe, args.output, threads=args.threads, ray=args.ray, only=only)
    print((out / "report.md").read_text())
    return 0


def cmd_report(args) -> int:
    from medslm.report.build import build_report

    rep = build_report(Path(args.results), args.output)
    print(Path(rep["md"]).read_text())
    print(f"wrote {rep['html']}, {rep['md']}, {rep['leaderboard']}")
    return 0
