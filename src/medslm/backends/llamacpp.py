"""The ``llamacpp`` backend: GGUF models on CPU through llama-cpp-python (``pip install 'medslm[llamacpp]'``).

Log-likelihoods come from llama.cpp's logits at the scored positions only: each batch flags the
tokens whose logits it needs (``llama_batch.logits``), so the 262k-way output head runs for a few
continuation tokens, not for every prompt token, and no ``n_ctx x vocabulary`` score buffer is kept
(llama-cpp-python's ``logits_all`` allocates 4.3 GB of them for Gemma at n_ctx 4096). Tokenized like
the ``hf`` backend (lm-evaluation-harness's recipe: the continuation's tokens are
those of context + continuation after the context's own; BOS for the Gemma family). A context
shared by several continuations is evaluated once: the KV cache keeps it and each continuation
is appended after it. Threads never exceed the free cores: oversubscribed OpenMP threads run tens
of times slower on a small machine.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from medslm.backends.base import (Backend, GenerateRequest, LoglikelihoodRequest, RollingRequest, cut_at_stop,
                                  target_logprobs, wants_bos)
from medslm.errors import MedslmError
from medslm.system import cpu_flags, usable_cores

_REPACK_ENV = "MEDSLM_LLAMACPP_REPACK"
_OPEN_LOCK = threading.Lock()  # open_llama swaps a module function for one call


def free_cores() -> int:
    """Cores not already busy: all this process may use, minus the load average's whole part."""
    n = usable_cores()
    try:
        busy = int(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, n - busy)


def find_gguf(model: str) -> Path:
    from medslm.models.loading import embedded_gguf, resolve

    p = Path(model).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return p
    if p.is_dir():
        gg = sorted(p.glob("*.gguf"))
        if gg:
            return gg[0]
    if model == "gemma3-270m":
        return embedded_gguf()
    r = resolve(model, pull=False)
    if r.gguf is not None:
        return r.gguf
    raise MedslmError(f"{model}: the llamacpp backend needs a .gguf file (or a directory holding one); "
                      "this model has none")


def repack_weights() -> bool:
    """Whether llama.cpp may move weights into its extra CPU buffer types (AMX tiles, interleaved
    repacks). Not on a CPU with AMX: there ggml's AMX matmul segfaults in the first ``llama_decode``
    (seen with every llama-cpp-python from 0.3.17 to 0.3.36 on the embedded Gemma Q4_K_M on an AMX
    Xeon; llama.cpp issue #20824), a crash no Python code can catch.
    ``MEDSLM_LLAMACPP_REPACK=1`` or ``0`` overrides the choice."""
    env = os.environ.get(_REPACK_ENV, "").strip().lower()
    if env in ("1", "true", "on", "yes"):
        return True
    if env in ("0", "false", "off", "no"):
        return False
    if env:
        raise MedslmError(f"{_REPACK_ENV}={env!r}: use 1 (let llama.cpp repack weights) or 0 (plain CPU "
                          "buffers), or unset it for the automatic choice (off on AMX CPUs)")
    return not any(f.startswith("amx") for f in cpu_flags())


def open_llama(**kwargs: Any):
    """``llama_cpp.Llama(**kwargs)``, with llama.cpp's extra buffer types off where
    :func:`repack_weights` says so. llama-cpp-python has no argument for ``use_extra_bufts`` (its
    ``Llama`` fills ``llama_model_params`` from ``llama_model_default_params()``), so that function is
    wrapped for the one call; versions whose params lack the field are left as they are."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    if repack_weights():
        return llama_cpp.Llama(**kwargs)
    with _OPEN_LOCK:
        default = low.llama_model_default_params

        def params():
            p = default()
            if any(name == "use_extra_bufts" for name, *_ in type(p)._fields_):
                p.use_extra_bufts = False
            return p

        low.llama_model_default_params = params
        try:
            return llama_cpp.Llama(**kwargs)
        finally:
            low.llama_model_default_params = default


class LlamaCppBackend(Backend):
    name = "llamacpp"
    show_progress = True

    def __init__(self, model: Any = "gemma3-270m", *, threads: int | None = None, n_ctx: int = 4096,
                 add_bos: bool | None = None, shared_context: bool = True, **_: Any):
        try:
            import llama_cpp
        except ImportError as e:
            raise MedslmError("the llamacpp backend needs llama-cpp-python: pip install 'medslm[llamacpp]' "
                              "(it compiles llama.cpp, about 13 minutes on 2 cores)") from e
        self.path = find_gguf(str(model))
        cores, free = usable_cores(), free_cores()
        if threads and threads > cores:
            raise MedslmError(f"--threads {threads} is more than the {cores} cores this process may use; "
                              f"oversubscribed llama.cpp threads run many times slower. Use --threads {cores} "
                              "or fewer")
        if threads and threads > free:
            import sys

            print(f"medslm: warning: --threads {threads} but only about {free} cores are idle (load "
                  "average); llama.cpp slows down sharply when its threads share cores", file=sys.stderr)
        self.threads = threads or free
        self.repack = repack_weights()  # recorded: it changes which kernels llama.cpp's numbers come from
        self.llm = open_llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=self.threads,
                              n_threads_batch=self.threads, logits_all=False, verbose=False)
        arch = self.llm.metadata.get("general.architecture", "")
        self.add_bos = wants_bos(arch) if add_bos is None else add_bos
        self.prefix_token_id = self.llm.token_bos()
        self.n_ctx = n_ctx
        self.shared_context = shared_context
        self.ref = str(model)
        self._hash: str | None = None
        self._serving_facts()

    def tokens(self, text: str, bos: bool) -> list[int]:
        # special-token strings (a chat template's turn markers) parse as those tokens, as the hf
        # backend's tokenizer parses them
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True)

    def _decode(self, tokens: list[int], keep: int, first: int):
        """Evaluate ``tokens`` after the first ``keep`` already in the KV cache, in llama.cpp's batches
        of ``n_batch``; yield ``(position, rows)`` for the logits of positions ``first`` onwards (a
        copy per batch: llama.cpp reuses its buffer). llama-cpp-python's ``Llama.eval`` can only keep
        the last position or all of them, so the batch is filled here (its ``_batch``/``_ctx``)."""
        import numpy as np

        llm = self.llm
        ctx, batch = llm._ctx, llm._batch.batch
        if keep > llm.n_tokens:
            keep = 0
        ctx.kv_cache_seq_rm(-1, keep, -1)
        llm.n_tokens = keep
        n_vocab = llm.n_vocab()
        for s0 in range(keep, len(tokens), llm.n_batch):
            part = tokens[s0:s0 + llm.n_batch]
            batch.n_tokens = len(part)
            n_out = 0
            for j, t in enumerate(part):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, s0 + j, 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = s0 + j >= first
                n_out += s0 + j >= first
            ctx.decode(llm._batch)
            llm.input_ids[s0:s0 + len(part)] = part
            llm.n_tokens = s0 + len(part)
            if n_out:
                rows = np.ctypeslib.as_array(ctx.get_logits(), shape=(n_out * n_vocab,)).reshape(n_out, n_vocab)
                yield s0 + len(part) - n_out, rows.copy()

    def _rows(self, tokens: list[int], keep: int, first: int):
        """The logits of positions ``first`` .. ``len(tokens) - 1`` (few: continuation tokens)."""
        import numpy as np

        parts = [r for _, r in self._decode(tokens, keep, first)]
        return np.concatenate(parts) if parts else np.zeros((0, self.llm.n_vocab()), np.float32)

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        import numpy as np

        pairs = [self.encode_pair(r.context, r.continuation) for r in requests]
        order = sorted(range(len(pairs)), key=lambda i: pairs[i][0])  # same contexts adjacent
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        self.llm.reset()
        prev: list[int] = []
        for i in order:
            ctx, cont = pairs[i]
            seq = ctx + cont
            if len(seq) > self.n_ctx:
                raise MedslmError(f"a request of {len(seq)} tokens exceeds n_ctx {self.n_ctx}")
            if not self.shared_context:
                # the whole sequence in one pass, exactly as a server scores an echoed prompt
                # (llama.cpp's results depend on the batch's length, even by one token)
                scores = self._rows(seq, 0, len(ctx) - 1)
                out[i] = target_logprobs(scores[: len(cont)], cont)
                continue
            # always the context in one batch, then the continuation: llama.cpp's numerics depend on
            # how tokens are batched, so a shared context must be computed the same way as a fresh one
            if not (len(prev) >= len(ctx) and prev[:len(ctx)] == ctx):
                last = self._rows(ctx, 0, len(ctx) - 1)  # the row that predicts the continuation's first token
            rest = self._rows(seq[:-1], len(ctx), len(ctx))
            out[i] = target_logprobs(np.concatenate([last, rest]), cont)
            prev = seq[:-1]
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]:
        out = []
        for r in requests:
            toks = self.tokens(r.text, False)
            seq = [self.llm.token_bos()] + toks
            total = 0.0
            for s in range(0, len(toks), self.n_ctx):  # disjoint windows, as the hf backend
                tgt = toks[s:s + self.n_ctx]
                # scored batch by batch: at most n_batch rows of logits held at once
                for pos, rows in self._decode(seq[s:s + len(tgt)], 0, 0):
                    total += target_logprobs(rows, tgt[pos:pos + len(rows)])[0]
            out.append(total)
        return out

    def generate(self, requests: list[GenerateRequest]) -> list[str]:
        outs = []
        for r in requests:
            self.llm.reset()
            res = self.llm.create_completion(r.context, max_tokens=r.max_tokens, temperature=0.0,
                                             stop=list(r.until) or None)
            outs.append(cut_at_stop(res["choices"][0]["text"], r.until))
        return outs

    # ------------------------------------------------------------------ token-level (serving)
    def _serving_facts(self) -> None:
        llm = self.llm
        self.bos_id = llm.token_bos()
        self.vocab_size = llm.n_vocab()
        eos = {llm.token_eos()}
        # chat-tuned Gemma ends a turn with <end_of_turn>; treat it as an end of sequence
        for t in ("<end_of_turn>", "<|eot_id|>", "<|im_end|>"):
            ids = llm.tokenize(t.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                eos.add(ids[0])
        self.eos_ids = frozenset(eos)
        self.bos_text = llm.detokenize([self.bos_id], special=True).decode("utf-8", "replace")
        self.chat_template = llm.metadata.get("tokenizer.chat_template") or None
        self.special_tokens = {"bos_token": self.bos_text,
                               "eos_token": llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")}
        self._seen: list[int] = []

    def tokenize(self, text: str, *, bos: bool | None = None, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=self.add_bos if bos is None else bos,
                                 special=special)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", "replace")

    def token_text(self, i: int) -> str:
        return self.llm.detokenize([i], special=True).decode("utf-8", "replace")

    def forward(self, ids: list[int], keep: int, all_logits: bool = False):
        """Logits of positions ``keep`` .. end (``all_logits``), else of the last position."""
        if keep > len(self._seen) or self._seen[:keep] != ids[:keep] or keep >= len(ids):
            keep = 0
        self._seen = list(ids)
        return self._rows(ids, keep, keep if all_logits else len(ids) - 1)

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text, False))

    def parameters(self) -> int | None:
        """The file's weights: its ``general.parameter_count`` where the writer recorded one (llama.cpp's
        converter does not, nor do medslm's block writes), else llama.cpp's own count of the loaded
        tensors' elements; None if neither is available."""
        recorded = self.llm.metadata.get("general.parameter_count")
        if recorded:
            return int(recorded)
        model = getattr(self.llm, "_model", None)  # llama-cpp-python's LlamaModel (llama_model_n_params)
        return int(model.n_params()) if model is not None and hasattr(model, "n_params") else None

    def describe(self) -> dict[str, Any]:
        if self._hash is None:
            from medslm.system import sha256_file

            self._hash = "sha256:" + sha256_file(self.path)
        from medslm.system import cpu_name

        out = {"backend": self.name, "model": self.ref, "path": str(self.path), "hash": self._hash,
               "bytes": self.path.stat().st_size, "parameters": self.parameters(),
               "dtype": self.llm.metadata.get("general.file_type", "gguf"), "device": "cpu",
               "threads": self.threads, "cpu": cpu_name(), "repack": self.repack,
               "scoring": "shared-context" if self.shared_context else "pairwise"}
        side = self.path.with_name(self.path.name + ".medslm.json")  # written by medslm export
        if side.is_file():
            import json

            try:
                s = json.loads(side.read_text())
            except (OSError, ValueError):
                s = {}
            if s.get("sha256") and "sha256:" + s["sha256"] == self._hash:  # the sidecar of these bytes
                out |= {"chain": f"{s.get('chain', 'base')} -> export {s.get('type')}", "source_hash": s.get("source_hash")}
        return out


BACKEND = LlamaCppBackend
