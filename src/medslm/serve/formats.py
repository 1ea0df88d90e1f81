"""OpenAI response formatting: usage, the legacy completions ``logprobs`` object (what
lm-evaluation-harness reads) and the chat ``logprobs`` content list.

Tokens are named by their text, or as ``token_id:N`` when a request sets vLLM's
``return_tokens_as_token_ids`` (exact where several tokens share a text: what top-k distillation
from a served teacher needs)."""

from __future__ import annotations

from typing import Any, Callable

from medslm.serve.engine import Event, Job


def usage(scope_state: dict, prompt: int, completion: int) -> dict:
    scope_state["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def token_label(rt: Any, as_ids: bool) -> Callable[[int], str]:
    return (lambda t: f"token_id:{int(t)}") if as_ids else (lambda t: rt.token_text(int(t)))


def named(top: dict[int, float], label: Callable[[int], str]) -> dict[str, float]:
    """Top alternatives keyed by name (the first of several tokens with one text wins)."""
    out: dict[str, float] = {}
    for t, lp in top.items():
        out.setdefault(label(t), lp)
    return out


def legacy_logprobs(rt: Any, job: Job, events: list[Event], echo: bool, k: int) -> dict:
    """The legacy completions ``logprobs`` object (what lm-evaluation-harness reads)."""
    label, text = token_label(rt, job.as_ids), lambda t: rt.token_text(int(t))
    tokens: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    pos = 0
    ids = job.prompt_ids
    if echo:
        for j, t in enumerate(ids):
            tokens.append(label(t))
            offsets.append(pos)
            pos += len(text(t))
            lps.append(None if j == 0 else job.prompt_lp[j - 1])
            tops.append(None if j == 0 or not k else named(job.prompt_top[j - 1], label))
    for e in events:
        for j, t in enumerate(e.token_ids):
            tokens.append(label(t))
            offsets.append(pos)
            pos += len(text(t))
            lps.append(e.logprobs[j])
            tops.append(named(e.top[j], label) if k and j < len(e.top) else None)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def stream_logprobs(rt: Any, job: Job, ev: Event) -> dict:
    """One streamed completions chunk's ``logprobs``."""
    label = token_label(rt, job.as_ids)
    return {"tokens": [label(t) for t in ev.token_ids], "token_logprobs": ev.logprobs,
            "top_logprobs": [named(t, label) for t in ev.top] or None, "text_offset": []}


def chat_logprobs(rt: Any, events: list[Event], as_ids: bool = False) -> dict:
    label = token_label(rt, as_ids)
    content = []
    for e in events:
        for j, t in enumerate(e.token_ids):
            s = label(t)
            top = named(e.top[j], label) if j < len(e.top) else {}
            content.append({"token": s, "logprob": e.logprobs[j], "bytes": list(s.encode()),
                            "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())}
                                             for a, b in top.items()]})
    return {"content": content}
