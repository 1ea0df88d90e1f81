"""``medslm serve --model REF``: a private OpenAI-compatible server (see medslm.serve)."""

from __future__ import annotations

import argparse

from medslm.commands import examples, threads_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API on this machine",
        description="Serve a model (GGUF on llama.cpp, or any artifact on transformers) with /v1/completions, "
                    "/v1/chat/completions (streaming), /tokenize, /detokenize, /health, /metrics and a chat "
                    "page at /. Binds 127.0.0.1 unless --host is given; another address needs an API key "
                    "or --insecure. Logs carry metadata only, never prompts or completions.",
        epilog=examples("medslm serve --model gemma3-270m",
                        "medslm serve --runtime vllm --model runs/assistant --slots 16   (in the vllm venv)",
                        "medslm serve --model runs/lora-q4_k_m.gguf --api-key-file keys.txt --host 0.0.0.0",
                        "curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' "
                        "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"What is scurvy?\"}]}'"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model reference or .gguf (default: the newest model a recipe "
                   "registered to serve, e.g. the medical assistant; else the embedded base gemma3-270m)")
    p.add_argument("--backend", "--runtime", dest="backend", default="auto",
                   help="auto (default: llamacpp for GGUF) | llamacpp | hf | vllm (vLLM's engine: continuous "
                        "batching of --slots requests, default 16)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[], help="a key clients send as "
                   "'Authorization: Bearer KEY' (repeatable)")
    p.add_argument("--api-key-file", help="file with one key per line")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a key")
    p.add_argument("--cors-origin", action="append", default=[], help="allowed browser origin (default: none)")
    p.add_argument("--served-model-name", help="the model id clients see (default: the model's name)")
    p.add_argument("--slots", type=int, default=None, help="requests generated at once (default 1, one "
                   "model instance each; vllm: 16, batched in one engine)")
    p.add_argument("--queue", type=int, default=64, help="requests waiting for a slot before 429 (default 64)")
    p.add_argument("--max-tokens", type=int, default=256, help="default max_tokens when a request "
                   "gives none (default 256)")
    p.add_argument("--max-tokens-cap", type=int, default=4096, help="largest max_tokens accepted")
    p.add_argument("--request-timeout", type=float, default=120.0, help="wall-clock seconds per request; "
                   "generation ends with finish_reason 'length' (default 120)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="request body limit in bytes (default 1 MiB)")
    p.add_argument("--threads", type=threads_arg, help="llama.cpp / torch threads (default: free cores)")
    p.add_argument("--n-ctx", type=int, default=2048, help="context size (default 2048)")
    p.add_argument("--device", default="cpu", help="hf backend device: cpu | cuda")
    p.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"), help="hf / vllm runtime: fp32 | bf16 | fp16 (default: the "
                   "artifact's own for vllm, fp32 on CPU for hf); a GGUF's types are its own")
    p.add_argument("--rag", help="a retrieval index directory (medslm rag build) for requests with rag: true")
    p.add_argument("--log-file", help="write the (metadata-only) request log here instead of stderr")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    from medslm.errors import MedslmError
    from medslm.serve.engine import Limits
    from medslm.serve.server import ServeOptions, read_keys, serve

    if args.slots is None:
        args.slots = 16 if args.backend == "vllm" else 1
    for flag, v, lo in (("--slots", args.slots, 1), ("--queue", args.queue, 0), ("--max-tokens", args.max_tokens, 1),
                        ("--max-body", args.max_body, 1024), ("--n-ctx", args.n_ctx, 16)):
        if v < lo:
            raise MedslmError(f"{flag} {v}: must be at least {lo}")
    if args.request_timeout <= 0:
        raise MedslmError(f"--request-timeout {args.request_timeout}: must be positive")
    if args.model is None:
        import sys

        from medslm.serve.default_model import default_model

        args.model, note = default_model()
        print(f"medslm serve: {note}", file=sys.stderr, flush=True)
    if args.dtype:  # refused now, not after the server has started loading in the background
        from medslm.serve.runtime import runtime_backend

        runtime_backend(args.model, args.backend, dtype=args.dtype)
    limits = Limits(slots=args.slots, queue=args.queue, max_tokens_default=args.max_tokens,
                    max_tokens_cap=args.max_tokens_cap, request_seconds=args.request_timeout,
                    max_body_bytes=args.max_body)
    o = ServeOptions(model=args.model, backend=args.backend, host=args.host, port=args.port,
                     api_keys=read_keys(args.api_key, args.api_key_file), insecure=args.insecure,
                     cors_origins=args.cors_origin, threads=args.threads, n_ctx=args.n_ctx,
                     device=args.device, dtype=args.dtype, served_name=args.served_model_name, rag=args.rag,
                     log_file=args.log_file, limits=limits)
    serve(o)
    return 0
