"""``medslm eval --model REF --tasks a,b [--limit N] [--output DIR]``; ``--tasks ls`` lists tasks."""

from __future__ import annotations

import argparse
import json
import os

from medslm.errors import MedslmError

from medslm.commands import examples, nonneg_int, positive_int, threads_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on medical benchmarks (accuracy and cost)",
                       description="Evaluate a model on tasks; one results JSON per task with metrics, "
                       "95% bootstrap CIs, efficiency and what is needed to reproduce them. Requests are "
                       "cached on disk: an interrupted run resumes where it stopped.",
                       epilog=examples("medslm eval --tasks ls",
                                       "medslm eval --model gemma3-270m --tasks pubmedqa,medmcqa --limit 100",
                                       "medslm eval --model ./runs/q4 --tasks medppl --output results/"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m", help="model reference (default gemma3-270m)")
    p.add_argument("--tasks", required=True, help="comma-separated task names, or 'ls'")
    p.add_argument("--backend", default="hf", help="hf (default), llamacpp, openai (an OpenAI-compatible server: "
                   "--base-url), ...")
    p.add_argument("--base-url", default=None, metavar="URL", help="--backend openai: the server, e.g. "
                   "http://127.0.0.1:8000/v1 (key from $MEDSLM_OPENAI_API_KEY or $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=positive_int, default=4, help="--backend openai: requests in flight "
                   "(default 4)")
    p.add_argument("--split", default=None,
                   help="override the tasks' split: S or task=S,task=S; fit@N/dev@N carve a seeded "
                        "held-out part (e.g. pubmedqa=dev@50,medmcqa=dev@500)")
    p.add_argument("--limit", default=None,
                   help="a fixed, seeded subset of N examples; or per task: pubmedqa=40,medppl=10")
    p.add_argument("--fewshot", type=nonneg_int, default=0, help="k-shot examples from the train/dev split")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--threads", type=threads_arg, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--rag", default=None, metavar="INDEX", help="compare accuracy without and with retrieved "
                   "snippets from INDEX (medslm rag build), paired per item: McNemar test and a CI of the gain")
    p.add_argument("--rag-k", type=positive_int, default=3, help="snippets per question with --rag (default 3)")
    p.add_argument("--scoring", default="shared-context", help="shared-context (default: a context shared "
                   "by several continuations is computed once) | pairwise (each context + continuation in "
                   "one pass, exactly as a server scoring lm-eval's echo requests)")
    p.add_argument("--judge", default="semantic", help="amega judge: 'semantic', a model reference "
                   "(BACKEND:REF), or an OpenAI-compatible server URL[#MODEL] (e.g. http://127.0.0.1:8000/v1#judge)")
    p.add_argument("--chat-template", default="off", choices=("off", "auto", "on"),
                   help="ask each prompt as a user turn of the model's chat template (auto: when it has "
                        "one; on: it must), as lm-eval's --apply_chat_template; default off (plain prompts)")
    p.add_argument("--output", default=None, metavar="DIR", help="write one results JSON per task here")
    p.add_argument("--export-lm-eval", default=None, metavar="DIR",
                   help="write the tasks (--tasks ls: every task) as lm-evaluation-harness task folders "
                        "(JSONL of medslm's exact prompts + YAML) instead of evaluating; run them with "
                        "lm_eval --include_path DIR --tasks medslm_NAME")
    p.add_argument("--data", default=None, metavar="PATH", help="read the task's dataset from PATH")
    p.add_argument("--cache", default=None, metavar="FILE", help="request cache (default in MEDSLM_CACHE)")
    p.add_argument("--bootstrap", type=nonneg_int, default=1000, help="bootstrap resamples for CIs (0: none)")
    p.add_argument("--no-decode-bench", action="store_true", help="skip the decode tokens/s measurement")
    p.add_argument("--json", action="store_true", help="print the results as JSON (without per-example)")
    p.add_argument("--label", default=None, help="a name for this model in results and reports")
    p.add_argument("--result-file", default=None, metavar="FILE",
                   help="write the (single task's) result to exactly this file")
    p.add_argument("--overwrite", action="store_true", help="replace result files of other settings (a "
                   "rerun with the same settings replaces its own result without it; files medslm did not "
                   "write are never replaced)")
    p.add_argument("--lenient", action="store_true", help="skip malformed dataset records (counted and "
                   "reported) instead of stopping at the first")
    p.set_defaults(handler=cmd_eval)


def list_tasks() -> int:
    from medslm.commands.models import _table
    from medslm.tasks import TASKS, get_task

    rows = [("task", "dataset", "split", "metrics", "prompt")]
    for n in TASKS.names():
        t = get_task(n)
        rows.append((n, t.dataset, t.split, ",".join(t.metrics), f"v{t.prompt_version}"))
    _table(rows)
    return 0


def parse_limit(text: str | None, names: list[str]) -> int | dict[str, int] | None:
    """``N`` or ``task=N,task=N`` (tasks not named: no limit)."""
    from medslm.errors import MedslmError

    if text is None:
        return None
    try:
        if "=" not in text:
            out: int | dict[str, int] = int(text)
            vals = [out]
        else:
            out = {k.strip(): int(v) for k, v in (kv.split("=", 1) for kv in text.split(","))}
            vals = list(out.values())
            unknown = set(out) - set(names)
            if unknown:
                raise MedslmError(f"--limit names {sorted(unknown)}, which are not in --tasks")
    except ValueError:
        raise MedslmError(f"--limit {text!r}: expected N or task=N,task=N with whole numbers") from None
    if any(v < 1 for v in vals):
        raise MedslmError(f"--limit {text!r}: limits must be positive numbers of examples")
    return out


def parse_split(text: str | None, names: list[str]) -> str | dict[str, str] | None:
    """``S`` or ``task=S,task=S`` (tasks not named keep their own split)."""
    from medslm.errors import MedslmError

    if not text or "=" not in text:
        return text
    out = {}
    for kv in text.split(","):
        k, _, v = kv.partition("=")
        if not k.strip() or not v.strip():
            raise MedslmError(f"--split {text!r}: expected S or task=S,task=S")
        out[k.strip()] = v.strip()
    unknown = set(out) - set(names)
    if unknown:
        raise MedslmError(f"--split names {sorted(unknown)}, which are not in --tasks")
    return out


def _per_task(v, name):
    return v.get(name) if isinstance(v, dict) else v


def check_outputs(args, names, split, limit) -> None:
    """Every result file this run would write may be written (see medslm.outputs)."""
    from pathlib import Path

    from medslm.evaluate.runner import result_filename
    from medslm.outputs import check_result, check_writable

    model_dir = Path(args.model).expanduser()
    for target in (args.output, args.result_file):
        if target and model_dir.is_dir() and (Path(target).resolve() == model_dir.resolve()
                                               or model_dir.resolve() in Path(target).resolve().parents):
            raise MedslmError(f"{'--output' if target == args.output else '--result-file'} {target} lies inside "
                              f"the model directory {args.model}; a result written there would change the "
                              "artifact's files: choose a place outside it")
    if args.output:
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise MedslmError(f"--output {out} is an existing file, not a folder; choose another --output")
        check_writable(out, "--output", folder=True)
    if not (args.output or args.result_file):
        return
    who = args.label or args.model
    for n in names:
        f = Path(args.result_file) if args.result_file else Path(args.output) / result_filename(who, n)
        settings = {"name": n, "requested_split": _per_task(split, n), "limit": _per_task(limit, n),
                    "fewshot": args.fewshot, "seed": args.seed}
        check_result(f, settings, flag="--result-file" if args.result_file else "--output",
                     overwrite=args.overwrite, backend=args.backend, model=who)


def check_rag_outputs(args, names, split, limit) -> None:
    from pathlib import Path

    from medslm.outputs import check_target

    from medslm.rag.evaluate import rag_tasks

    for flag, v in (("--data", args.data), ("--fewshot", args.fewshot), ("--lenient", args.lenient)):
        if v:
            raise MedslmError(f"{flag} does not apply to --rag (both arms read the task's own data, zero-shot)")
    ok = rag_tasks()
    bad = [n for n in names if n not in ok]
    if bad:
        raise MedslmError(f"--rag works with the multiple-choice tasks whose spec has a retrieval setup "
                          f"({', '.join(ok)}); not {', '.join(bad)}")
    if args.result_file:
        raise MedslmError("--result-file does not apply to --rag; use --output DIR")
    if args.output:
        from medslm.evaluate.runner import result_filename
        from medslm.outputs import check_result

        who = args.label or args.model
        for n in names:
            check_target(Path(args.output) / f"rag__{n}.json", flag="--output", kind="file",
                         overwrite=True, replaceable=("result", "rag"))
            for arm in (f"{n}+norag", f"{n}+rag{args.rag_k}"):  # each arm's Result
                settings = {"name": arm, "requested_split": _per_task(split, n), "limit": _per_task(limit, n),
                            "fewshot": 0, "seed": args.seed}
                check_result(Path(args.output) / result_filename(who, arm), settings, flag="--output",
                             overwrite=args.overwrite, backend=args.backend)


def check_data(args, tasks, split, limit) -> None:
    """Load each task's examples and few-shot pool now (the runner reuses them): a missing split,
    an empty subset or a few-shot pool too small fails before the model is loaded."""
    for t in tasks:
        t.lenient = args.lenient
        ex = t.examples(_per_task(split, t.name), _per_task(limit, t.name), args.seed, path=args.data)
        if not ex:
            raise MedslmError(f"task {t.name}: no examples in split {_per_task(split, t.name) or t.split!r}")
        t.prepare(ex, fewshot=args.fewshot, seed=args.seed, path=args.data)


def cmd_eval(args) -> int:
    if args.export_lm_eval:
        return export_lm_eval(args)
    if args.tasks.strip() == "ls":
        return list_tasks()
    from medslm.backends.base import BACKENDS, get_backend
    from medslm.errors import MedslmError
    from medslm.tasks import TASKS, get_task

    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise MedslmError(f"--tasks {args.tasks!r} names no task; see `medslm eval --tasks ls`")
    for n in names:
        if n not in TASKS:
            raise TASKS.unknown(n)
    limit = parse_limit(args.limit, names)
    split = parse_split(args.split, names)
    tasks = [get_task(n, judge=args.judge) for n in names]
    if args.scoring not in ("shared-context", "pairwise"):
        raise MedslmError(f"--scoring {args.scoring!r}: choose shared-context or pairwise")
    if args.result_file and len(tasks) != 1:
        raise MedslmError("--result-file takes one task; use --output DIR for several")
    if args.backend not in BACKENDS:
        raise BACKENDS.unknown(args.backend)
    if args.base_url and args.backend != "openai":
        raise MedslmError(f"--base-url applies to --backend openai (this is --backend {args.backend})")
    if args.backend == "openai":  # a flag error before any data is read or downloaded
        from medslm.backends.openai import URL_ENV

        if not (args.base_url or any(os.environ.get(k) for k in URL_ENV)):
            raise MedslmError("--backend openai needs the server's URL: --base-url http://HOST:PORT/v1 (or set "
                              f"{URL_ENV[0]})")
    if args.rag:
        check_rag_outputs(args, names, split, limit)
    else:
        check_outputs(args, names, split, limit)
    check_data(args, tasks, split, limit)  # splits, limits and the few-shot pool: before the model loads
    remote = {"base_url": args.base_url, "concurrency": args.concurrency} if args.backend == "openai" else {}
    backend = get_backend(args.backend)(args.model, dtype=args.dtype, device=args.device,
                                        batch_size=args.batch_size, threads=args.threads,
                                        shared_context=args.scoring == "shared-context", **remote)
    try:
        return _run(args, backend, tasks, names, split, limit)
    finally:
        backend.close()


def _run(args, backend, tasks, names, split, limit) -> int:
    from medslm.evaluate.runner import evaluate, format_table

    if args.rag:
        return rag_eval(args, backend, names, split, limit)
    results = evaluate(backend, tasks, split=split, limit=limit, seed=args.seed,
                       fewshot=args.fewshot, output=None, cache_path=args.cache,
                       data_path=args.data, bootstrap=args.bootstrap,
                       measure_decode=not args.no_decode_bench, chat_template=args.chat_template)
    from medslm.evaluate.runner import write_result

    for r in results:
        if args.label:
            r["model"]["label"] = args.label
        if args.result_file or args.output:
            r["path"] = str(write_result(r, args.output, args.result_file))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "examples"} for r in results], indent=1))
    else:
        d = results[0]["model"]
        print(f"model {args.model}  hash {str(d.get('hash'))[:23]}  {d.get('dtype')}  {d.get('device')}  "
              f"threads {d.get('threads')}")
        print(format_table(results))
        for r in results:
            if r.get("path"):
                print(f"wrote {r['path']}")
    return 0


def export_lm_eval(args) -> int:
    from medslm.evaluate.lm_eval_export import export
    from medslm.tasks import TASKS

    names = TASKS.names() if args.tasks.strip() == "ls" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    for n in names:
        if n not in TASKS:
            raise TASKS.unknown(n)
    done = export(names, args.export_lm_eval, split=parse_split(args.split, names),
                  limit=parse_limit(args.limit, names), seed=args.seed)
    skipped = {n: why for n, why in done.items() if why.startswith("skipped")}
    for n, why in skipped.items():
        print(f"  {n}: {why}")
    print(f"exported {len(done) - len(skipped)} task(s) to {args.export_lm_eval}; run: lm_eval --model hf "
          f"--model_args pretrained=DIR --include_path {args.export_lm_eval} --tasks medslm_NAME")
    return 0 if len(done) > len(skipped) else 1


def rag_eval(args, backend, names, split, limit) -> int:
    """Each arm through the runner (cached requests, Result JSONs with CIs); the paired comparison
    (McNemar, bootstrap CI of the gain) in ``rag__<task>.json``."""
    import json
    from pathlib import Path

    from medslm import settings
    from medslm.evaluate.cache import RequestCache
    from medslm.evaluate.runner import write_result
    from medslm.outputs import replace_file
    from medslm.rag.evaluate import rag_accuracy

    cache = RequestCache(args.cache or settings.cache_dir() / "requests.sqlite")
    print(f"{'task':10} {'n':>4} {'without':>8} {'with':>8} {'gain [95% CI]':>24} {'McNemar p':>10}  claim")
    try:
        for n in names:
            sp = split.get(n) if isinstance(split, dict) else split
            lim = limit.get(n) if isinstance(limit, dict) else limit
            r = rag_accuracy(backend, n, args.rag, k=args.rag_k, split=sp, limit=lim, seed=args.seed,
                             cache=cache, bootstrap=args.bootstrap)
            lo, hi = r["diff_ci95"]
            print(f"{n:10} {r['n']:>4} {100 * r['acc_without']:>8.1f} {100 * r['acc_with']:>8.1f} "
                  f"{100 * r['diff']:>+8.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] {r['mcnemar_p']:>10.3g}  "
                  f"{'gain' if r['gain_claimed'] else 'no gain claimed (CI includes 0)' if lo <= 0 <= hi else 'loss'}")
            arms = r.pop("results")
            if args.output:
                for res in arms.values():
                    if args.label:
                        res["model"]["label"] = args.label
                    r.setdefault("result_files", []).append(str(write_result(res, args.output)))
                r["backend"] = backend.describe()
                replace_file(Path(args.output) / f"rag__{n}.json", json.dumps(r, indent=2))
    finally:
        cache.close()
    return 0
