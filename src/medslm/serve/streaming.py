"""Streaming responses (server-sent events) in OpenAI's chunk format, with cancellation when the
client leaves and the slot given back in every case."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import Request

from medslm.serve.engine import Event, Job, QueueFull
from medslm.serve.errors import error_body
from medslm.serve.formats import chat_logprobs, stream_logprobs, usage


def stream_response(srv: Any, request: Request, job: Job, cid: str, created: int, *, chat: bool,
                    include_usage: bool, extra: dict | None = None, logprobs: bool = False) -> Any:
    """Server-sent events for one job, framed as OpenAI's: the role first (chat), text chunks with
    the finish reason on the last, optional usage, ``[DONE]``. ``srv`` gives engine, rt, name,
    metrics and observe."""
    from sse_starlette import EventSourceResponse

    engine, rt, name, metrics = srv.engine, srv.rt, srv.name, srv.metrics

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
                    srv.observe(job, t0, ev)
                    if include_usage:
                        body = {"id": cid, "object": obj, "created": created, "model": name,
                                "choices": [], "usage": usage(state, ev.prompt_tokens,
                                                               ev.completion_tokens)}
                        if extra:
                            body.update(extra)
                        yield {"data": json.dumps(body)}
                    else:
                        usage(state, ev.prompt_tokens, ev.completion_tokens)
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
                lp = chat_logprobs(rt, [ev], job.as_ids)
            return chunk({"content": ev.text}, finish, lp)
        if job.sampling.logprobs is not None:
            lp = stream_logprobs(rt, job, ev)
        return chunk(ev.text, finish, lp)

    return EventSourceResponse(gen(), sep="\n", ping=15)
