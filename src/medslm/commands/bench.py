"""``medslm bench serve``: latency and throughput of a server under load (see medslm.serve.loadgen)."""

from __future__ import annotations

import argparse

from medslm.commands import examples, threads_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: `bench serve` loads a server and reports TTFT, TPOT, capacity",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    b = s.add_parser("serve", help="load a server (started here with --model, or --url) and report latency",
                     description="Concurrency or Poisson load from one asyncio/httpx process; TTFT, time per "
                                 "output token, inter-token and end-to-end latency p50/p90/p99, requests/s, "
                                 "output tok/s, error and 429 rates, and capacity.",
                     epilog=examples("medslm bench serve --model runs/lora-q4_k_m.gguf --concurrency 1,2,4",
                                     "medslm bench serve --url http://127.0.0.1:8000 --mode poisson --rate 0.5"),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--url", help="a running server (default: start one for --model)")
    b.add_argument("--model", default="gemma3-270m", help="model to serve when --url is not given")
    b.add_argument("--backend", "--runtime", dest="backend", default="auto",
                   help="the server's runtime: auto | llamacpp | hf | vllm")
    b.add_argument("--slots", type=int, default=None, help="the server's --slots (default: its own)")
    b.add_argument("--n-ctx", type=int, default=None, help="the server's --n-ctx (default: its own)")
    b.add_argument("--threads", type=threads_arg, default=None)
    b.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"), help="the server's --dtype (hf / vllm runtime)")
    b.add_argument("--api-key")
    b.add_argument("--mode", default="concurrency", help="concurrency (default) | poisson")
    b.add_argument("--concurrency", default="1,2,4", help="levels, comma-separated (default 1,2,4)")
    b.add_argument("--rate", type=float, default=0.5, help="poisson: requests per second")
    b.add_argument("--requests", type=int, default=0, help="requests per level (default max(8, 3 x concurrency))")
    b.add_argument("--max-tokens", type=int, default=64)
    b.add_argument("--compare-in-process", action="store_true",
                   help="also measure the same model decoding in this process (single stream)")
    b.add_argument("--out", help="write the results JSON here")
    b.set_defaults(handler=cmd_bench_serve)
    p.set_defaults(handler=lambda a: p.print_help() or 0)


def cmd_bench_serve(args) -> int:
    import asyncio
    import json
    import sys

    from medslm.errors import MedslmError
    from medslm.serve import loadgen

    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        raise MedslmError(f"--concurrency {args.concurrency!r}: comma-separated integers, e.g. 1,2,4") from None
    if args.mode not in ("concurrency", "poisson") or any(c < 1 for c in levels) or args.rate <= 0:
        raise MedslmError("--mode concurrency|poisson, --concurrency >= 1 and --rate > 0")
    proc = None
    url = args.url
    res: dict = {"model": args.model if not url else None, "url": url, "dtype": args.dtype}
    if args.dtype and not url:
        from medslm.serve.runtime import runtime_backend

        runtime_backend(args.model, args.backend, dtype=args.dtype)  # before a server starts
    if args.compare_in_process:
        res["in_process_tok_s"] = loadgen.in_process_decode(args.model, args.backend, args.threads, 2048,
                                                            args.max_tokens, dtype=args.dtype)
    if not url:
        from medslm.serve.server import start_subprocess

        serve_args = ["--model", args.model, "--backend", args.backend, "--queue", "256",
                      "--max-tokens", str(args.max_tokens)]
        if args.threads:
            serve_args += ["--threads", str(args.threads)]
        if args.slots:
            serve_args += ["--slots", str(args.slots)]
        if args.n_ctx:
            serve_args += ["--n-ctx", str(args.n_ctx)]
        if args.dtype:
            serve_args += ["--dtype", args.dtype]
        if args.api_key:
            serve_args += ["--api-key", args.api_key]
        proc, url = start_subprocess(serve_args)
    from medslm.energy import Meter, per_tokens

    meter = Meter("machine")  # the server is another process: the machine's energy under the load
    try:
        out = []
        if args.mode == "poisson":
            n = args.requests or 16
            with meter.task("poisson") as energy:
                lv = asyncio.run(loadgen.run_level(url, concurrency=0, requests=n, max_tokens=args.max_tokens,
                                                   api_key=args.api_key, mode="poisson", rate=args.rate))
            lv["energy"] = per_tokens(energy, lv["output_tokens"])
            out.append(lv)
        else:
            for c in levels:
                n = args.requests or max(8, 3 * c)
                with meter.task(f"concurrency {c}") as energy:
                    lv = asyncio.run(loadgen.run_level(url, concurrency=c, requests=n, max_tokens=args.max_tokens,
                                                       api_key=args.api_key))
                lv["energy"] = per_tokens(energy, lv["output_tokens"])  # Wh per 1,000 output tokens
                out.append(lv)
                print(f"concurrency {c}: {lv['ok']}/{lv['requests']} ok, TTFT p50 {lv['ttft_ms']['p50']} ms, "
                      f"TPOT p50 {lv['tpot_ms']['p50']} ms", file=sys.stderr)
        res["levels"] = out
        res["capacity"] = loadgen.capacity(out)
        one = next((lv for lv in out if lv.get("concurrency") == 1), None)
        if one and one["tpot_ms"]["p50"]:
            res["single_stream_tok_s"] = round(1000.0 / one["tpot_ms"]["p50"], 2)
    finally:
        meter.close()
        if proc is not None:
            from medslm.serve.server import stop_subprocess

            stop_subprocess(proc)
    print(loadgen.format_report(res))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0
