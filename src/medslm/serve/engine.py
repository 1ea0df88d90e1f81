"""Generation slots, a bounded queue, cancellation and streaming over a :class:`Runtime`.

One *slot* is one runtime (one loaded model instance) that runs one request at a time in its own
worker thread; ``slots`` instances run side by side. Requests beyond the free slots wait in a queue
of at most ``queue`` entries; past that, :class:`QueueFull` (the server answers 429 at once).

A request is a :class:`Job`. Its thread decodes token by token and checks, between tokens, whether
the client went away (``cancel``), whether a stop string or EOS ended it, and whether its wall-clock
cap ran out (``finish_reason: "length"``). Text is emitted incrementally: bytes of an incomplete
UTF-8 character and any tail that could still become a stop string are held back, so the joined
stream equals the non-streamed text.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import numpy as np

from medslm.serve.runtime import Runtime, log_softmax


class QueueFull(Exception):
    def __init__(self, retry_after: int = 1):
        self.retry_after = retry_after


@dataclass
class Limits:
    slots: int = 1
    queue: int = 64
    max_tokens_default: int = 256
    max_tokens_cap: int = 4096
    request_seconds: float = 120.0
    max_body_bytes: int = 1 << 20

    def summary(self) -> str:
        return (f"slots={self.slots} queue={self.queue} default max_tokens={self.max_tokens_default} "
                f"max_tokens cap={self.max_tokens_cap} per-request cap={self.request_seconds:g}s "
                f"body limit={self.max_body_bytes} bytes")


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None   # number of top alternatives per generated token (None: off)


@dataclass
class Event:
    kind: str                       # "token" | "done" | "error"
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _stop_holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best


def top_k(lp: np.ndarray, k: int) -> np.ndarray:
    if k == 1:  # lm-eval asks for logprobs=1 on every request: one pass instead of a partition
        return np.array([int(lp.argmax())])
    idx = np.argpartition(-lp, k)[:k] if k < len(lp) else np.arange(len(lp))
    return idx[np.argsort(-lp[idx], kind="stable")]


class Job:
    """One request. ``prompt_logprobs=K`` also scores the prompt's own tokens (``echo`` with
    ``logprobs``): ``prompt_lp[j]`` is log P(prompt[j+1] | prompt[:j+1]) and ``prompt_top[j]`` its
    top-K alternatives, computed row by row so a long prompt never holds a [tokens x vocab] array.
    """

    def __init__(self, prompt_ids: list[int], sampling: Sampling, deadline_s: float,
                 prompt_logprobs: int | None = None):
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.deadline_s = deadline_s
        self.prompt_logprobs = prompt_logprobs
        self.prompt_lp: list[float] = []
        self.prompt_top: list[dict[int, float]] = []  # token id -> log-probability
        self.as_ids = False  # name tokens token_id:N in logprobs (vLLM's return_tokens_as_token_ids)
        self.engine_finish: str | None = None  # set by a runtime whose engine ends the request itself
        self.cancel = threading.Event()
        self.generated: list[int] = []
        self.stamps: list[float] = []  # perf_counter() when each text event was emitted
        self.started = 0.0
        self.on_slot = False  # set once the engine has taken the slot over (it releases it then)

    def _pick(self, lp: np.ndarray, rng: np.random.Generator) -> int:
        s = self.sampling
        if s.temperature <= 0:
            return int(lp.argmax())
        z = lp.astype(np.float64) / s.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if s.top_p < 1.0:
            order = np.argsort(-p)
            c = np.cumsum(p[order])
            cut = int(np.searchsorted(c, s.top_p)) + 1
            mask = np.zeros_like(p)
            mask[order[:cut]] = 1.0
            p = p * mask
            p /= p.sum()
        return int(rng.choice(len(p), p=p))

    def run(self, rt: Runtime, emit: Callable[[Event], None]) -> None:
        try:
            self._run(rt, emit)
        except BaseException as e:  # the consumer must always get a final event
            emit(Event("error", text=type(e).__name__, finish_reason="error"))
            raise

    def _tokens(self, rt: Runtime, ids: list[int], rng: np.random.Generator):
        """(token, its log-probability, top alternatives or None), one at a time, sampled here from
        the runtime's logits (the caller appends each token to ``ids`` before asking for the next);
        the prompt is scored first when asked (echo)."""
        s = self.sampling
        last = None
        if self.prompt_logprobs is not None:
            rows = rt.forward(ids, 0, all_logits=True)
            for s0 in range(0, len(ids) - 1, 32):  # 32 rows at a time: never a [tokens x vocab] copy
                blk = log_softmax(np.asarray(rows[s0: min(s0 + 32, len(ids) - 1)]))
                for j, row in enumerate(blk, s0):
                    t = ids[j + 1]
                    self.prompt_lp.append(float(row[t]))
                    if self.prompt_logprobs:
                        top = {int(i): float(row[i]) for i in top_k(row, self.prompt_logprobs)}
                        top.setdefault(int(t), float(row[t]))
                        self.prompt_top.append(top)
            last = log_softmax(np.asarray(rows[-1]))
        if s.max_tokens <= 0:
            return
        lp = last if last is not None else log_softmax(rt.forward(ids, 0)[-1])
        while True:
            tok = self._pick(lp, rng)
            top = None
            if s.logprobs:
                top = {int(t): float(lp[t]) for t in top_k(lp, s.logprobs)}
                top.setdefault(int(tok), float(lp[tok]))
            yield tok, float(lp[tok]), top
            lp = log_softmax(rt.forward(ids, len(ids) - 1)[-1])

    def _run(self, rt: Runtime, emit_: Callable[[Event], None]) -> None:
        def emit(ev: Event) -> None:
            if ev.kind == "token":
                self.stamps.append(time.perf_counter())
            emit_(ev)

        s = self.sampling
        self.started = time.monotonic()
        rng = np.random.default_rng(s.seed)
        ids = list(self.prompt_ids)
        finish = "length"
        emitted = 0  # characters of the decoded completion already sent
        pending: Event | None = None
        cut = False  # ended by a stop string (the text after it is dropped)
        # the runtime's own sampler when it batches requests itself (vLLM), else sampled here
        src = rt.stream(self, ids) if hasattr(rt, "stream") else self._tokens(rt, ids, rng)
        try:
            for tok, tok_lp, top in ([] if self.cancel.is_set() else src):
                if self.cancel.is_set():
                    finish = "cancelled"
                    break
                if tok in rt.eos_ids:
                    finish = "stop"
                    break
                self.generated.append(tok)
                ids.append(tok)
                ev = pending or Event("token")
                ev.token_ids.append(tok)
                ev.logprobs.append(tok_lp)
                if top is not None:
                    ev.top.append(top)
                text = rt.detokenize(self.generated)
                hits = [i for i in (text.find(x, max(0, emitted - len(x))) for x in s.stop) if i >= 0]
                if hits:
                    ev.text += text[emitted:min(hits)]
                    emit(ev)
                    pending, cut = None, True
                    finish = "stop"
                    break
                safe = len(text) - _stop_holdback(text, s.stop)
                if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                    safe = min(safe, len(text.rstrip("\ufffd")))
                if safe > emitted:
                    ev.text += text[emitted:safe]
                    emitted = safe
                    emit(ev)
                    pending = None
                else:
                    pending = ev  # nothing printable yet; its token rides with the next event
                if time.monotonic() - self.started > self.deadline_s:
                    break
                if len(self.generated) >= s.max_tokens or len(ids) >= rt.n_ctx:
                    break
            else:
                finish = self.engine_finish or finish  # the runtime's engine ended it (vLLM: stop or length)
        finally:
            src.close()
        if not cut:  # flush what was held back (a possible stop prefix, or the last token's text)
            tail = rt.detokenize(self.generated)[emitted:] if self.generated else ""
            if tail or pending is not None:
                ev = pending or Event("token")
                ev.text += tail
                emit(ev)
        emit(Event("done", finish_reason=finish, prompt_tokens=len(self.prompt_ids),
                   completion_tokens=len(self.generated)))


class Engine:
    """Slots and a bounded queue in front of ``slots`` runtimes (see module doc)."""

    def __init__(self, runtimes: list[Runtime] | None, limits: Limits, metrics: Any = None):
        self.limits = limits
        self.metrics = metrics
        # free slots and waiters: plain structures under a lock rather than an asyncio.Queue, which
        # binds to one event loop (test clients and embedding apps may call from several)
        self._lock = threading.Lock()
        self._free: list[Runtime] = []
        self._waiters: deque[asyncio.Future] = deque()
        self.waiting = 0
        self.running = 0
        self.ready = False
        self.runtimes: list[Runtime] = []
        if runtimes:
            self.load(runtimes)

    def load(self, runtimes: list[Runtime]) -> None:
        """Install the loaded runtimes (one per slot); the server is ready from here on."""
        if not runtimes:
            raise ValueError("Engine needs at least one runtime")
        self.runtimes = list(runtimes)
        self._free = list(runtimes)
        self.rt = runtimes[0]  # tokenizer and metadata (all runtimes hold the same model)
        self.pool = ThreadPoolExecutor(max_workers=len(runtimes), thread_name_prefix="medslm-slot")
        self.ready = True

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.running.set(self.running)
            self.metrics.waiting.set(self.waiting)

    def admit(self) -> None:
        """Raise :class:`QueueFull` when no slot is free and the queue is full."""
        if not self._free and self.waiting >= self.limits.queue:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise QueueFull(retry_after=max(1, int(self.limits.request_seconds // 10) or 1))

    async def acquire(self) -> Runtime:
        """A free slot, waiting in FIFO order; :class:`QueueFull` at once when the queue is full."""
        with self._lock:
            self.admit()
            if self._free and not self._waiters:
                return self._free.pop()
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            self.waiting += 1
        self._gauges()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed over just as the client left: pass it on
            else:
                with self._lock:
                    if fut in self._waiters:
                        self._waiters.remove(fut)
            raise
        finally:
            with self._lock:
                self.waiting -= 1
            self._gauges()

    def release(self, rt: Runtime) -> None:
        """Give a slot to the first live waiter (on its own event loop), else back to the pool."""
        def give(f: asyncio.Future, r: Runtime) -> None:
            if f.cancelled():
                self.release(r)
            else:
                f.set_result(r)

        with self._lock:
            while self._waiters:
                f = self._waiters.popleft()
                if f.done():
                    continue
                try:
                    f.get_loop().call_soon_threadsafe(give, f, rt)
                    return
                except RuntimeError:  # that waiter's event loop is gone: next one
                    continue
            self._free.append(rt)

    async def stream(self, job: Job, rt: Runtime) -> AsyncIterator[Event]:
        """Run ``job`` on the slot ``rt`` (from :meth:`acquire`) and yield its events.

        Closing the iterator early (the client went away) cancels the job; the slot goes back to
        the pool only when its thread has really stopped, so the next request never shares it.
        """
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Event] = asyncio.Queue()

        def emit(ev: Event) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, ev)
            except RuntimeError:  # the request's event loop is closed: nobody is listening
                job.cancel.set()

        def work() -> None:
            # the slot is released here, in the worker thread, the moment generation stops; not by a
            # callback on the request's event loop, which may already be gone (a test client's is)
            try:
                job.run(rt, emit)
            finally:
                with self._lock:
                    self.running -= 1
                self._gauges()
                self.release(rt)

        job.on_slot = True
        with self._lock:
            self.running += 1
        self._gauges()
        fut = loop.run_in_executor(self.pool, work)
        try:
            while True:
                ev = await q.get()
                if ev.kind == "error":
                    await fut  # re-raises the thread's exception
                yield ev
                if ev.kind == "done":
                    return
        finally:
            job.cancel.set()

    def close(self) -> None:
        if self.runtimes:
            self.pool.shutdown(wait=False, cancel_futures=True)
