"""The OpenAI-compatible HTTP server (FastAPI).

Routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``, ``/tokenize``,
``/detokenize``, ``/health`` (503 while loading, 200 when ready), ``/metrics`` (Prometheus) and the
chat page at ``/``.

Patient text never reaches a log: the access log line is metadata only (request id, route, status,
token counts, timings), error bodies name the field and the rule but never echo the value, and
uvicorn's own access log is off. API keys are compared in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from medslm.serve.chat import render
from medslm.serve.engine import Engine, Event, Job, QueueFull, Sampling
from medslm.serve.metrics import Metrics
from medslm.serve.protocol import (MAX_JSON_DEPTH, ChatRequest, CompletionRequest, DetokenizeRequest,
                                   TokenizeRequest, Unsupported, json_depth)

log = logging.getLogger("medslm.serve")

PUBLIC = {"/health", "/", "/favicon.ico"}  # no key needed: liveness and the page's static shell


@dataclass
class ServerConfig:
    model_name: str = "medslm"
    api_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _err(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
         headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


_BRANCH = re.compile(r"^(str|int|bool|float|none|(list|dict|tuple)\[.*\]|function-.*|[A-Z]\w*)$")


def _loc(loc: tuple) -> str:
    parts = [str(x) for x in loc if x not in ("body",)]
    # drop pydantic's union-branch labels ("str", "list[int]", "function-after[...]", "TextPart"); our
    # field names are lower-case words, so they never match
    parts = [p for p in parts if not _BRANCH.match(p)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


class _Guard:
    """Pure ASGI middleware: request id, API keys, body size, metadata-only access log, metrics."""

    def __init__(self, app: Any, state: "ServerState"):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        if not rid or len(rid) > 128 or not rid.isprintable():
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        path = scope.get("path", "")
        t0 = time.perf_counter()
        status_box = {"status": 0}

        async def send_wrapped(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status_box["status"] = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = list(msg["headers"]) + [(b"x-request-id", rid.encode())]
            await send(msg)

        async def respond(resp: Response) -> None:
            await resp(scope, receive, send_wrapped)

        try:
            if st.config.api_keys and path not in PUBLIC and scope.get("method") != "OPTIONS":
                auth = headers.get("authorization", "")
                token = auth[7:] if auth[:7].lower() == "bearer " else ""
                ok = False
                for k in st.config.api_keys:  # compare with every key: time does not reveal which
                    ok |= hmac.compare_digest(token.encode(), k.encode())
                if not ok:
                    return await respond(_err(401, "missing or invalid API key: send "
                                              "'Authorization: Bearer <key>'", "authentication_error",
                                              code="invalid_api_key"))
            if not st.engine.ready and path not in ("/health", "/metrics", "/"):
                return await respond(_err(503, "the model is still loading; poll /health until it "
                                          "answers 200", "server_error", code="loading",
                                          headers={"Retry-After": "5"}))
            limit = st.limits_body
            clen = headers.get("content-length")
            if clen is not None and clen.isdigit() and int(clen) > limit:
                return await respond(_err(413, f"request body of {clen} bytes exceeds the limit of {limit} "
                                          "bytes", "invalid_request_error", code="request_too_large"))
            seen = {"n": 0}

            async def receive_limited() -> dict:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen["n"] += len(msg.get("body", b""))
                    if seen["n"] > limit:
                        raise APIError(413, f"request body exceeds the limit of {limit} bytes",
                                       code="request_too_large")
                return msg

            await self.app(scope, receive_limited, send_wrapped)
        finally:
            dt = time.perf_counter() - t0
            route = path if path in st.routes else "other"
            st.metrics.requests.labels(route, str(status_box["status"])).inc()
            extra = scope["state"].get("usage", {})
            log.info("request id=%s method=%s route=%s status=%s seconds=%.3f%s", rid,
                     scope.get("method"), route, status_box["status"], dt,
                     "".join(f" {k}={v}" for k, v in extra.items()))


class ServerState:
    def __init__(self, engine: Engine, config: ServerConfig, metrics: Metrics):
        self.engine, self.config, self.metrics = engine, config, metrics
        self.limits_body = engine.limits.max_body_bytes
        self.routes: set[str] = set()
        self.rag: Any = None


def _usage(scope_state: dict, prompt: int, completion: int) -> dict:
    scope_state["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


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

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        e = errs[0] if errs else {"loc": ("body",), "msg": "invalid request", "type": "invalid"}
        param = _loc(tuple(e.get("loc", ())))
        if e.get("type") == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {param}"
        elif e.get("type") == "json_invalid":
            param = "body"
            msg = "the request body is not valid JSON"
        elif e.get("type") == "missing":
            msg = f"{param}: required field is missing"
        else:  # pydantic's rule text, never the offending value (it may be patient text)
            msg = f"{param}: {e.get('msg', 'invalid value')}"
        return _err(400, msg, "invalid_request_error", param)

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return _err(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(Unsupported)
    async def _unsupported(request: Request, exc: Unsupported) -> JSONResponse:
        return _err(400, str(exc), "invalid_request_error", exc.param, "unsupported_parameter")

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return _err(429, "the server is at capacity (all slots busy and the queue is full); retry "
                    "after the Retry-After seconds", "rate_limit_error", code="queue_full",
                    headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code,
                                                                                   str(exc.detail))
        return _err(exc.status_code, msg, "invalid_request_error")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get("state", {}).get("request_id", "")
        log.error("request id=%s internal error %s", rid, type(exc).__name__)
        return _err(500, f"internal server error (request id {rid})", "server_error")

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
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if req.stream:
            engine.admit()
            return stream_response(request, jobs[0], cid, created, chat=False,
                                   include_usage=bool(req.stream_options and req.stream_options.include_usage))
        choices, pt, ct = [], 0, 0
        for i, job in enumerate(jobs):
            t0 = time.perf_counter()
            events, done = await run_to_end(request, job)
            observe(job, t0, done)
            text = "".join(e.text for e in events)
            lp = None
            if req.logprobs is not None:
                lp = legacy_logprobs(job, events, req.echo, req.logprobs)
            if req.echo:
                text = rt.detokenize(job.prompt_ids) + text
            choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": done.finish_reason})
            pt += done.prompt_tokens
            ct += done.completion_tokens
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": choices, "usage": _usage(request.scope["state"], pt, ct)}

    def legacy_logprobs(job: Job, events: list[Event], echo: bool, k: int) -> dict:
        """The legacy completions ``logprobs`` object (what lm-evaluation-harness reads)."""
        tokens: list[str] = []
        lps: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        pos = 0
        ids = job.prompt_ids
        if echo:
            for j, t in enumerate(ids):
                s = rt.token_text(t)
                tokens.append(s)
                offsets.append(pos)
                pos += len(s)
                lps.append(None if j == 0 else job.prompt_lp[j - 1])
                tops.append(None if j == 0 or not k else job.prompt_top[j - 1])
        for e in events:
            for j, t in enumerate(e.token_ids):
                s = rt.token_text(t)
                tokens.append(s)
                offsets.append(pos)
                pos += len(s)
                lps.append(e.logprobs[j])
                tops.append(e.top[j] if k and j < len(e.top) else None)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

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
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        extra = {}
        if citations:
            extra["citations"] = citations
        if notes:
            extra["medslm_notes"] = notes
        if req.stream:
            engine.admit()
            return stream_response(request, job, cid, created, chat=True,
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
                                  "logprobs": chat_logprobs(events) if req.logprobs else None,
                                  "finish_reason": done.finish_reason}
        return {"id": cid, "object": "chat.completion", "created": created, "model": name,
                "choices": [choice], "usage": _usage(request.scope["state"], done.prompt_tokens,
                                                     done.completion_tokens), **extra}

    def chat_logprobs(events: list[Event]) -> dict:
        content = []
        for e in events:
            for j, t in enumerate(e.token_ids):
                s = rt.token_text(t)
                top = e.top[j] if j < len(e.top) else {}
                content.append({"token": s, "logprob": e.logprobs[j], "bytes": list(s.encode()),
                                "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())}
                                                 for a, b in top.items()]})
        return {"content": content}

    def stream_response(request: Request, job: Job, cid: str, created: int, *, chat: bool,
                        include_usage: bool, extra: dict | None = None, logprobs: bool = False) -> Any:
        from sse_starlette import EventSourceResponse

        obj = "chat.completion.chunk" if chat else "text_completion"
        state = request.scope["state"]

        def chunk(delta_or_text: Any, finish: str | None, lp: Any = None) -> str:
            if chat:
                ch = {"index": 0, "delta": delta_or_text, "logprobs": lp, "finish_reason": finish}
            else:
                ch = {"index": 0, "text": delta_or_text, "logprobs": lp, "finish_reason": finish}
            body = {"id": cid, "object": obj, "created": created, "model": name, "choices": [ch]}
            if include_usage:
                body["usage"] = None
            return json.dumps(body)

        async def gen() -> Any:
            t0 = time.perf_counter()
            agen = slot = None
            last: Event | None = None
            try:
                if chat:  # the first delta carries the role, as OpenAI's (and our citations)
                    first = json.loads(chunk({"role": "assistant", "content": ""}, None))
                    first.update(extra or {})
                    yield {"data": json.dumps(first)}
                # queued inside the stream: a client that leaves while waiting cancels this
                # generator (sse-starlette watches for the disconnect), which gives up its place
                try:
                    slot = await engine.acquire()
                except QueueFull:  # lost a race for the last queue place after admit()
                    yield {"data": json.dumps(error_body("the server is at capacity", "rate_limit_error",
                                                         code="queue_full"))}
                    return
                agen = engine.stream(job, slot)
                async for ev in agen:
                    if ev.kind == "done":
                        # finish_reason rides on the last content chunk (held back one event for it)
                        if last is not None:
                            yield {"data": render_ev(last, ev.finish_reason)}
                        else:
                            yield {"data": chunk({} if chat else "", ev.finish_reason)}
                        observe(job, t0, ev)
                        if include_usage:
                            body = {"id": cid, "object": obj, "created": created, "model": name,
                                    "choices": [], "usage": _usage(state, ev.prompt_tokens,
                                                                   ev.completion_tokens)}
                            if extra:
                                body.update(extra)
                            yield {"data": json.dumps(body)}
                        else:
                            _usage(state, ev.prompt_tokens, ev.completion_tokens)
                        yield {"data": "[DONE]"}
                        return
                    if last is not None and not ev.text:  # no text yet: its tokens join the last chunk
                        last.token_ids += ev.token_ids
                        last.logprobs += ev.logprobs
                        last.top += ev.top
                        continue
                    if last is not None:
                        yield {"data": render_ev(last, None)}
                    last = ev
            except asyncio.CancelledError:
                metrics.cancelled.inc()
                raise
            finally:
                job.cancel.set()
                if agen is not None:
                    await agen.aclose()
                if slot is not None and not job.on_slot:  # acquired but never started
                    engine.release(slot)

        def render_ev(ev: Event, finish: str | None) -> str:
            lp = None
            if chat:
                if logprobs:
                    lp = chat_logprobs([ev])
                return chunk({"content": ev.text}, finish, lp)
            if job.sampling.logprobs is not None:
                lp = {"tokens": [rt.token_text(t) for t in ev.token_ids], "token_logprobs": ev.logprobs,
                      "top_logprobs": ev.top or None, "text_offset": []}
            return chunk(ev.text, finish, lp)

        return EventSourceResponse(gen(), sep="\n", ping=15)

    for r in app.routes:
        st.routes.add(getattr(r, "path", ""))

    page = Path(__file__).with_name("static") / "index.html"

    @app.get("/")
    async def index() -> Response:
        if not page.is_file():
            return _err(404, "the chat page is not installed", "invalid_request_error")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    st.routes.add("/")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(_Guard, state=st)
    return app
