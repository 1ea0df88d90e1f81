"""``medslm serve --runtime vllm``: vLLM's engine (continuous batching, paged attention) behind
medslm's own API, so keys, limits, metadata-only logs, redaction, citations and the chat page stay
medslm's.

One vLLM engine (the ``vllm`` backend's, :class:`medslm.backends.vllm.VLLMBackend`) is stepped by
one driver thread; each of the server's ``--slots`` is a :class:`VLLMRuntime` that submits its
request to that engine and reads the tokens back as vLLM produces them, so up to ``slots``
requests decode together in vLLM's batches. vLLM samples (temperature, top_p, seed, top-k
log-probabilities, prompt log-probabilities for ``echo``); medslm's engine still applies stop
strings, the per-request wall-clock cap and cancellation (a request whose client went away is
aborted in vLLM), and streams the text.
"""

from __future__ import annotations

import queue
import threading
import uuid
from typing import Any

from medslm.serve.runtime import FACTS, Runtime


class Driver:
    """One thread owns the engine: it adds the submitted requests, applies aborts and steps while
    there is work; each step's outputs go to their requests' queues.

    vLLM's ``LLMEngine`` is not thread-safe (``add_request`` and ``step`` share its output
    processor's request table), so slots never call it: :meth:`submit` and :meth:`abort` leave
    their request in an inbox the driver empties between steps, and return at once instead of
    waiting for the step in progress (a step of 16 sequences takes tens of ms on 2 cores).
    """

    def __init__(self, engine: Any):
        self.engine = engine
        self.lock = threading.Lock()  # guards the inbox and ``queues``, never held during a step
        self.inbox: list[tuple[str, str, Any, Any]] = []  # ("add", rid, prompt, params) | ("abort", rid, ...)
        self.queues: dict[str, queue.Queue] = {}
        self.wake = threading.Event()
        self.closed = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="medslm-vllm", daemon=True)
        self.thread.start()

    def submit(self, prompt: Any, params: Any) -> tuple[str, queue.Queue]:
        """Queue ``prompt`` (a vLLM prompt, e.g. ``TokensPrompt``) for the engine; its outputs
        arrive on the returned queue (an exception there if the engine failed)."""
        rid, q = uuid.uuid4().hex, queue.Queue()
        with self.lock:
            if self.error is not None:
                raise RuntimeError(f"the vLLM engine failed: {self.error}")
            self.queues[rid] = q
            self.inbox.append(("add", rid, prompt, params))
        self.wake.set()
        return rid, q

    def abort(self, rid: str) -> None:
        with self.lock:
            if self.queues.pop(rid, None) is not None:
                self.inbox.append(("abort", rid, None, None))
        self.wake.set()

    def _fail(self, e: BaseException) -> None:
        with self.lock:  # every waiting request learns of it
            self.error = e
            for q in self.queues.values():
                q.put(e)
            self.queues.clear()
            self.inbox.clear()

    def _loop(self) -> None:
        while not self.closed:
            self.wake.clear()  # before the inbox is read: a submit after this wakes the wait below
            with self.lock:
                todo, self.inbox = self.inbox, []
            for op, rid, prompt, params in todo:
                try:
                    if op == "add":
                        self.engine.add_request(rid, prompt, params)
                    else:
                        self.engine.abort_request([rid])
                except Exception as e:  # noqa: BLE001 - a request vLLM refuses fails alone
                    with self.lock:
                        q = self.queues.pop(rid, None)
                    if q is not None:
                        q.put(e)
            try:
                outs = self.engine.step() if self.engine.has_unfinished_requests() else None
            except BaseException as e:  # noqa: BLE001 - handed to every request, not lost in a thread
                self._fail(e)
                return
            if outs is None:
                self.wake.wait(0.05)
                continue
            with self.lock:
                for o in outs:
                    q = self.queues.get(o.request_id)
                    if q is not None:
                        q.put(o)
                        if o.finished:
                            del self.queues[o.request_id]

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class VLLMRuntime(Runtime):
    """One slot: a request at a time, decoded in the shared engine's batches."""

    def __init__(self, backend: Any, driver: Driver, model_id: str):
        self.backend, self.driver, self.model_id = backend, driver, model_id
        tok = backend.tokenizer
        self.n_ctx = backend.max_length
        self.bos_id = tok.bos_token_id
        self.vocab_size = len(tok)
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        gen = backend.llm.llm_engine.model_config.try_get_generation_config() or {}
        e = gen.get("eos_token_id")
        eos |= set(e if isinstance(e, list) else [e] if isinstance(e, int) else [])
        for t in ("<end_of_turn>", "<|eot_id|>", "<|im_end|>"):  # chat turns end a sequence too
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i != tok.unk_token_id:
                eos.add(i)
        self.eos_ids = frozenset(eos)
        for k in ("add_bos", "bos_text", "chat_template", "special_tokens"):
            setattr(self, k, getattr(backend, k))
        assert all(hasattr(self, k) for k in FACTS)

    def tokenize(self, text: str, *, bos: bool | None = None, special: bool = False) -> list[int]:
        ids = self.backend.tokenizer(text, add_special_tokens=False, split_special_tokens=not special).input_ids
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def detokenize(self, ids: list[int]) -> str:
        return self.backend.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_text(self, i: int) -> str:
        return self.backend.tokenizer.decode([i], skip_special_tokens=False)

    def forward(self, ids: list[int], keep: int, all_logits: bool = False):
        raise NotImplementedError("the vllm runtime samples in vLLM's engine (see stream)")

    def stream(self, job: Any, ids: list[int]):
        """(token, log-probability, top alternatives or None) as vLLM produces them; the prompt's
        log-probabilities (echo) land in ``job.prompt_lp`` / ``job.prompt_top`` first. Closing the
        generator (a stop string, the client gone, the time cap) aborts the request in vLLM."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        s = job.sampling
        room = max(1, self.n_ctx - len(ids))
        params = SamplingParams(
            max_tokens=min(max(1, s.max_tokens), room), temperature=s.temperature, top_p=s.top_p, seed=s.seed,
            logprobs=s.logprobs, prompt_logprobs=job.prompt_logprobs, stop_token_ids=sorted(self.eos_ids),
            output_kind=RequestOutputKind.DELTA, detokenize=False, skip_special_tokens=False)
        rid, q = self.driver.submit(TokensPrompt(prompt_token_ids=list(ids)), params)
        done = False
        try:
            first = True
            while True:
                o = q.get(timeout=max(1.0, job.deadline_s))
                if isinstance(o, BaseException):
                    raise RuntimeError(f"the vLLM engine failed this request: {o}") from o
                if first and job.prompt_logprobs is not None and o.prompt_logprobs:
                    for t, d in zip(ids[1:], o.prompt_logprobs[1:]):
                        job.prompt_lp.append(float(d[t].logprob))
                        if job.prompt_logprobs:
                            top = {int(k): float(v.logprob) for k, v in
                                   sorted(d.items(), key=lambda kv: kv[1].rank)[:job.prompt_logprobs]}
                            top.setdefault(int(t), float(d[t].logprob))
                            job.prompt_top.append(top)
                first = False
                c = o.outputs[0]
                if s.max_tokens > 0:
                    for j, t in enumerate(c.token_ids):
                        lps = c.logprobs[j] if c.logprobs else None
                        lp = float(lps[t].logprob) if lps and t in lps else float("nan")
                        top = None
                        if s.logprobs and lps:
                            top = {int(k): float(v.logprob) for k, v in
                                   sorted(lps.items(), key=lambda kv: kv[1].rank)[:s.logprobs]}
                            top.setdefault(int(t), lp)
                        yield int(t), lp, top
                if o.finished:
                    done = True
                    job.engine_finish = "stop" if c.finish_reason == "stop" else "length"
                    return
        finally:
            if not done:
                self.driver.abort(rid)

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "n_ctx": self.n_ctx, "runtime": "vllm (continuous batching)"}


def load_vllm_runtimes(model: str, slots: int, **kw: Any) -> list[VLLMRuntime]:
    """``slots`` runtimes over one vLLM engine (``max_num_seqs`` = slots)."""
    from medslm.backends.base import BACKENDS

    n_ctx = kw.pop("n_ctx", None)
    kw.pop("threads", None)
    backend = BACKENDS.get("vllm")(model, max_model_len=n_ctx, max_num_seqs=slots, **kw)
    driver = Driver(backend.llm.llm_engine)
    return [VLLMRuntime(backend, driver, model) for _ in range(slots)]
