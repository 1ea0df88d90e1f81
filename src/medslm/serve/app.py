"""The OpenAI-compatible HTTP server (FastAPI).

Routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``, ``/tokenize``,
``/detokenize``, ``/health`` (503 while loading, 200 when ready), ``/metrics`` (Prometheus) and the
chat page at ``/``.

Patient text never reaches a log: the access log line is metadata only (request id, route, status,
token counts, timings), error bodies name the field and the rule but never echo the value, and
uvicorn's own access log is off. API keys are compared in constant time and never logged.

The pieces: :mod:`~medslm.serve.middleware` (ids, keys, limits, access log), :mod:`~medslm.serve.errors`
(OpenAI error bodies), :mod:`~medslm.serve.formats` (usage and log-probabilities),
:mod:`~medslm.serve.streaming` (server-sent events); this module holds the routes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from medslm.serve.chat import render
from medslm.serve.engine import Engine, Event, Job, Sampling
from medslm.serve.errors import APIError, error_response, install_error_handlers
from medslm.serve.formats import chat_logprobs, legacy_logprobs, usage
from medslm.serve.metrics import Metrics
from medslm.serve.middleware import Guard, ServerConfig, ServerState
from medslm.serve.protocol import (MAX_JSON_DEPTH, ChatRequest, CompletionRequest, DetokenizeRequest,
                                   TokenizeRequest, json_depth)
from medslm.serve.streaming import stream_response

__all__ = ["ServerConfig", "create_app"]


def create_app(engine: Engine, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    metrics = engine.metrics or Metrics()
    engine.metrics = metrics
    st = ServerState(engine, config, metrics)
    app = FastAPI(title="medslm", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.medslm = st
    class _Current:  # the engine's runtime, looked up per call (the model loads after start-up)
        def __getattr__(self, k: str) -> Any:
            return getattr(engine.rt, k)

    rt: Any = _Current()
    name = config.model_name
    install_error_handlers(app)

    async def body_of(request: Request, model: type) -> Any:
        raw = await request.body()  # over the body limit: APIError(413) from the middleware's receive
        if json_depth(raw, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise APIError(400, f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels",
                           param="body")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise APIError(400, "the request body is not valid JSON", param="body") from None
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object", param="body")
        from pydantic import ValidationError

        try:
            req = model.model_validate(data)
        except ValidationError as e:
            raise RequestValidationError(e.errors(include_input=False)) from None
        if req.model not in (None, "", name):
            raise APIError(404, f"model {req.model!r} does not exist; this server serves {name!r} "
                           "(see /v1/models)", param="model", code="model_not_found")
        if hasattr(req, "check_supported"):
            req.check_supported()
        return req

    # ------------------------------------------------------------------ helpers
    def sampling(req: Any, max_tokens: int | None, prompt_len: int, stop: tuple[str, ...],
                 logprobs: int | None) -> Sampling:
        lim = engine.limits
        mt = lim.max_tokens_default if max_tokens is None else max_tokens
        if mt > lim.max_tokens_cap:
            raise APIError(400, f"max_tokens {mt} is above this server's cap of {lim.max_tokens_cap}",
                           param="max_tokens")
        if prompt_len + mt > rt.n_ctx:
            raise APIError(400, f"this model's context is {rt.n_ctx} tokens, but the request has "
                           f"{prompt_len} prompt tokens and max_tokens {mt} ({prompt_len + mt}); "
                           "shorten the prompt or lower max_tokens", param="max_tokens",
                           code="context_length_exceeded")
        return Sampling(max_tokens=mt, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                        stop=stop, logprobs=logprobs)

    async def acquire(request: Request) -> Any:
        """A free slot; 429 at once when the queue is full; a client that leaves the queue is dropped."""
        task = asyncio.ensure_future(engine.acquire())
        while not task.done():
            await asyncio.wait({task}, timeout=0.05)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                try:
                    slot = await task
                except asyncio.CancelledError:
                    slot = None
                if slot is not None:
                    engine.release(slot)
                metrics.cancelled.inc()
                raise APIError(499, "client closed the request", code="client_closed")
        return task.result()

    async def run_to_end(request: Request, job: Job) -> tuple[list[Event], Event]:
        """Collect a job's events; a client that disconnects cancels it (checked every 50 ms)."""
        events: list[Event] = []
        done: Event | None = None
        slot = await acquire(request)
        agen = engine.stream(job, slot)

        async def consume() -> None:
            nonlocal done
            async for ev in agen:
                if ev.kind == "done":
                    done = ev
                else:
                    events.append(ev)

        task = asyncio.ensure_future(consume())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.05)
                if not task.done() and await request.is_disconnected():
                    job.cancel.set()
                    metrics.cancelled.inc()
            task.result()
        finally:
            if not task.done():
                task.cancel()
            await agen.aclose()
            if not job.on_slot:  # acquired but never started
                engine.release(slot)
        assert done is not None
        return events, done

    def observe(job: Job, t0: float, done: Event) -> None:
        metrics.prompt_tokens.inc(done.prompt_tokens)
        metrics.generation_tokens.inc(done.completion_tokens)
        stamps = job.stamps
        if stamps:
            metrics.ttft.observe(stamps[0] - t0)
            for a, b in zip(stamps, stamps[1:]):
                metrics.itl.observe(b - a)
        metrics.e2e.observe(time.perf_counter() - t0)

    def encode_prompt(p: str | list[int], param: str) -> list[int]:
        if isinstance(p, str):
            return rt.tokenize(p)
        bad = [t for t in p if t >= rt.vocab_size]
        if bad:
            raise APIError(400, f"{param}: token id {bad[0]} is outside the vocabulary (0..{rt.vocab_size - 1})",
                           param=param)
        return list(p)

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health() -> JSONResponse:
        if not engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "running": engine.running, "waiting": engine.waiting})

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "medslm", "max_model_len": rt.n_ctx}]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict:
        req = await body_of(request, TokenizeRequest)
        if req.messages is not None:
            ids = render(rt, [{"role": m.role, "content": m.text()} for m in req.messages]).ids
        else:
            ids = rt.tokenize(req.prompt, bos=None if req.add_special_tokens else False)
        return {"tokens": ids, "count": len(ids), "max_model_len": rt.n_ctx}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict:
        req = await body_of(request, DetokenizeRequest)
        bad = [t for t in req.tokens if t >= rt.vocab_size]
        if bad:
            raise APIError(400, f"tokens: token id {bad[0]} is outside the vocabulary "
                           f"(0..{rt.vocab_size - 1})", param="tokens")
        return {"prompt": rt.detokenize(req.tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req: CompletionRequest = await body_of(request, CompletionRequest)
        prompts = [encode_prompt(p, "prompt") for p in req.prompts()]
        if any(not p for p in prompts):
            raise APIError(400, "prompt: an empty prompt has no tokens to condition on", param="prompt")
        stop = tuple([req.stop] if isinstance(req.stop, str) else (req.stop or []))
        if req.stream and len(prompts) > 1:
            raise APIError(400, "stream: streaming takes one prompt; send the prompts separately",
                           param="stream")
        if req.stream and req.echo:
            raise APIError(400, "echo: echo is not supported with stream: true", param="echo")
        echo_lp = req.logprobs if (req.echo and req.logprobs is not None) else None
        jobs = [Job(p, sampling(req, req.max_tokens, len(p), stop, req.logprobs), engine.limits.request_seconds,
                    prompt_logprobs=echo_lp) for p in prompts]
        for job in jobs:
            job.as_ids = req.return_tokens_as_token_ids
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if req.stream:
            engine.admit()
            return stream_response(srv, request, jobs[0], cid, created, chat=False,
                                   include_usage=bool(req.stream_options and req.stream_options.include_usage))
        choices, pt, ct = [], 0, 0
        for i, job in enumerate(jobs):
            t0 = time.perf_counter()
            events, done = await run_to_end(request, job)
            observe(job, t0, done)
            text = "".join(e.text for e in events)
            lp = None
            if req.logprobs is not None:
                lp = legacy_logprobs(rt, job, events, req.echo, req.logprobs)
            if req.echo:
                text = rt.detokenize(job.prompt_ids) + text
            choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": done.finish_reason})
            pt += done.prompt_tokens
            ct += done.completion_tokens
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": choices, "usage": usage(request.scope["state"], pt, ct)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req: ChatRequest = await body_of(request, ChatRequest)
        msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
        notes: list[str] = []
        if req.redact_input:
            from medslm.serve.safety import redact

            counts: dict[str, int] = {}
            for m in msgs:
                m["content"], c = redact(m["content"])
                for k, v in c.items():
                    counts[k] = counts.get(k, 0) + v
            notes.append("input redacted: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                                               if counts else "nothing found"))
        citations: list[dict] = []
        if req.rag:
            if st.rag is None:
                raise APIError(400, "rag: this server was started without a retrieval index "
                               "(medslm serve --rag INDEX)", param="rag")
            k = req.rag.k if not isinstance(req.rag, bool) else 4
            msgs, citations = st.rag.augment(msgs, k=k, tokenizer=rt,
                                             budget_tokens=max(64, min(700, rt.n_ctx // 3)))
        try:
            r = render(rt, msgs)
        except ValueError as e:
            raise APIError(400, f"messages: {e}", param="messages") from None
        stop = tuple([req.stop] if isinstance(req.stop, str) else (req.stop or [])) + r.stop
        k = (req.top_logprobs or 0) if req.logprobs else None
        job = Job(r.ids, sampling(req, req.limit(), len(r.ids), stop, k), engine.limits.request_seconds)
        job.as_ids = req.return_tokens_as_token_ids
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        extra = {}
        if citations:
            extra["citations"] = citations
        if notes:
            extra["medslm_notes"] = notes
        if req.stream:
            engine.admit()
            return stream_response(srv, request, job, cid, created, chat=True,
                                   include_usage=bool(req.stream_options and req.stream_options.include_usage),
                                   extra=extra, logprobs=req.logprobs)
        t0 = time.perf_counter()
        events, done = await run_to_end(request, job)
        observe(job, t0, done)
        text = "".join(e.text for e in events)
        if citations:
            from medslm.rag.cite import check_citations

            text, invalid = check_citations(text, len(citations))
            extra["invalid_citations_removed"] = invalid
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": chat_logprobs(rt, events, job.as_ids) if req.logprobs else None,
                                  "finish_reason": done.finish_reason}
        return {"id": cid, "object": "chat.completion", "created": created, "model": name,
                "choices": [choice], "usage": usage(request.scope["state"], done.prompt_tokens,
                                                     done.completion_tokens), **extra}

    srv = SimpleNamespace(engine=engine, rt=rt, name=name, metrics=metrics, observe=observe)
    for r in app.routes:
        st.routes.add(getattr(r, "path", ""))

    page = Path(__file__).with_name("static") / "index.html"

    @app.get("/")
    async def index() -> Response:
        if not page.is_file():
            return error_response(404, "the chat page is not installed", "invalid_request_error")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    st.routes.add("/")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(Guard, state=st)
    return app
