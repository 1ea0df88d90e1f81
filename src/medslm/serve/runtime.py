"""Token-level access to a model for the server: tokenize, step the model, detokenize.

The evaluation backends (:mod:`medslm.backends`) answer whole batches; a server needs one token at
a time (streaming, cancellation between tokens, per-token log-probabilities). A *runtime* wraps a
loaded backend and exposes exactly that:

- ``tokenize(text, bos=..., special=...)`` / ``detokenize(ids) -> str``
- ``forward(ids, keep, all_logits=False) -> ndarray``: raw logits (float32, ``[n, vocab]``) for
  the positions after the first ``keep`` tokens, reusing the KV cache of the previous call when
  ``ids[:keep]`` is what it last saw; with ``all_logits=False`` only the last row. With
  ``all_logits=True`` the llama.cpp runtime returns a view of llama.cpp's own buffer (no copy).

Sampling, stop strings, limits and streaming live in :mod:`medslm.serve.engine`, once for every
runtime. A runtime is used by one request at a time (one per generation slot).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medslm.errors import MedslmError


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


class Runtime:
    model_id: str = "model"
    n_ctx: int = 2048
    bos_id: int | None = None
    bos_text: str = ""
    eos_ids: frozenset[int] = frozenset()
    add_bos: bool = True
    chat_template: str | None = None
    special_tokens: dict[str, str] = {}
    vocab_size: int = 0

    def tokenize(self, text: str, *, bos: bool | None = None, special: bool = False) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    def token_text(self, i: int) -> str:
        return self.detokenize([i])

    def forward(self, ids: list[int], keep: int, all_logits: bool = False) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id}


class LlamaCppRuntime(Runtime):
    """A GGUF model on llama.cpp (the fast CPU path)."""

    def __init__(self, model: str, *, threads: int | None = None, n_ctx: int = 2048):
        from medslm.backends.llamacpp import LlamaCppBackend

        self.backend = LlamaCppBackend(model, threads=threads, n_ctx=n_ctx)
        llm = self.backend.llm
        self.llm = llm
        self.n_ctx = n_ctx
        self.model_id = model
        self.add_bos = self.backend.add_bos
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

    def forward(self, ids: list[int], keep: int, all_logits: bool = False) -> np.ndarray:
        llm = self.llm
        if keep > len(self._seen) or self._seen[:keep] != ids[:keep] or keep >= len(ids):
            keep = 0
        if keep == 0:
            llm.reset()
        else:
            llm.n_tokens = keep  # llama.cpp drops the KV cache beyond n_tokens on the next eval
        llm.eval(ids[keep:])
        self._seen = list(ids)
        return llm.scores[keep: len(ids)] if all_logits else llm.scores[len(ids) - 1: len(ids)]

    def describe(self) -> dict[str, Any]:
        d = self.backend.describe()
        d["n_ctx"] = self.n_ctx
        return d


class HFRuntime(Runtime):
    """A transformers model (any artifact; slower on CPU than llama.cpp, but every format works)."""

    def __init__(self, model: str, *, device: str = "cpu", dtype: str | None = None,
                 threads: int | None = None, n_ctx: int | None = None):
        from medslm.backends.hf import HFBackend

        self.backend = HFBackend(model, device=device, dtype=dtype, threads=threads, max_length=n_ctx)
        self.model, self.tok = self.backend.model, self.backend.tokenizer
        self.model_id = model
        self.n_ctx = self.backend.max_length
        self.add_bos = self.backend.add_bos
        self.bos_id = self.tok.bos_token_id
        self.bos_text = self.tok.bos_token or ""
        self.vocab_size = int(self.model.config.vocab_size)
        eos: set[int] = set()
        for e in (self.tok.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(e, int):
                eos.add(e)
            elif isinstance(e, (list, tuple)):
                eos.update(int(x) for x in e)
        self.eos_ids = frozenset(eos)
        self.chat_template = getattr(self.tok, "chat_template", None) or None
        self.special_tokens = {"bos_token": self.tok.bos_token or "", "eos_token": self.tok.eos_token or ""}
        self._seen: list[int] = []
        self._cache = None
        import inspect

        # transformers 5.2x renamed `past_key_values` to `cache`; accept both
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def tokenize(self, text: str, *, bos: bool | None = None, special: bool = False) -> list[int]:
        ids = self.tok(text, add_special_tokens=False, split_special_tokens=not special).input_ids
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def detokenize(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def token_text(self, i: int) -> str:
        return self.tok.decode([i], skip_special_tokens=False)

    def forward(self, ids: list[int], keep: int, all_logits: bool = False) -> np.ndarray:
        import torch

        # the cache is reused only to extend the previous sequence (generation); anything else
        # starts over (cropping a sliding-window cache is not supported by every architecture)
        if not (0 < keep == len(self._seen) and self._seen == ids[:keep] and keep < len(ids)):
            keep, self._cache = 0, None
        x = torch.tensor([ids[keep:]], device=self.backend.device)
        kw: dict[str, Any] = {"use_cache": True}
        if self._cache is not None:
            kw[self._cache_kw] = self._cache
        if not all_logits:
            kw["logits_to_keep"] = 1
        with torch.no_grad():
            out = self.model(input_ids=x, **kw)
        self._cache = out["cache"] if "cache" in out else out.get("past_key_values")
        self._seen = list(ids)
        return out.logits[0, -1:].float().cpu().numpy() if not all_logits else out.logits[0].float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        d = self.backend.describe()
        d["n_ctx"] = self.n_ctx
        return d


def load_runtime(model: str, backend: str = "auto", **kw: Any) -> Runtime:
    """``backend``: llamacpp (GGUF), hf, or auto (llamacpp when the model is or holds a .gguf)."""
    from pathlib import Path

    if backend == "auto":
        p = Path(model).expanduser()
        has_gguf = (p.suffix == ".gguf" and p.is_file()) or (p.is_dir() and any(p.glob("*.gguf")))
        backend = "llamacpp" if has_gguf or model == "gemma3-270m" else "hf"
        if backend == "llamacpp":
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                backend = "hf"
    if backend == "llamacpp":
        kw.pop("device", None), kw.pop("dtype", None)
        return LlamaCppRuntime(model, **kw)
    if backend == "hf":
        return HFRuntime(model, **kw)
    raise MedslmError(f"--backend {backend!r}: choose llamacpp, hf or auto")
