"""OpenAI response formatting: usage, the legacy completions ``logprobs`` object (what
lm-evaluation-harness reads) and the chat ``logprobs`` content list."""

from __future__ import annotations

from typing import Any

from medslm.serve.engine import Event, Job


def usage(scope_state: dict, prompt: int, completion: int) -> dict:
    scope_state["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def legacy_logprobs(rt: Any, job: Job, events: list[Event], echo: bool, k: int) -> dict:
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


def chat_logprobs(rt: Any, events: list[Event]) -> dict:
    content = []
    for e in events:
        for j, t in enumerate(e.token_ids):
            s = rt.token_text(t)
            top = e.top[j] if j < len(e.top) else {}
            content.append({"token": s, "logprob": e.logprobs[j], "bytes": list(s.encode()),
                            "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())}
                                             for a, b in top.items()]})
    return {"content": content}
