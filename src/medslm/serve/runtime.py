"""Token-level access to a model for the server: a thin adapter over a backend.

A server needs one token at a time (streaming, cancellation between tokens, per-token
log-probabilities); every serving backend answers that part of the backend contract
(:class:`medslm.backends.base.Backend`: ``tokenize``, ``detokenize``, ``token_text``, ``forward``,
and the facts ``n_ctx``, ``bos_id``, ``eos_ids``, ``chat_template``, ...). A *runtime* is one such
backend instance per generation slot (each holds its own KV cache); sampling, stop strings,
limits and streaming live in :mod:`medslm.serve.engine`, once for every backend.
"""

from __future__ import annotations

from typing import Any

from medslm.backends.base import BACKENDS, log_softmax
from medslm.errors import MedslmError

__all__ = ["BackendRuntime", "Runtime", "load_runtime", "log_softmax"]


class Runtime:
    """What the engine calls (a test may script one; :class:`BackendRuntime` wraps a backend)."""

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

    def forward(self, ids: list[int], keep: int, all_logits: bool = False):
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id}


FACTS = ("n_ctx", "bos_id", "bos_text", "eos_ids", "add_bos", "chat_template", "special_tokens", "vocab_size")


class BackendRuntime(Runtime):
    def __init__(self, backend: Any, model_id: str):
        self.backend, self.model_id = backend, model_id
        for k in FACTS:
            setattr(self, k, getattr(backend, k))
        self.tokenize, self.detokenize = backend.tokenize, backend.detokenize
        self.token_text, self.forward = backend.token_text, backend.forward

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "n_ctx": self.n_ctx}


NOT_SERVING = ("dummy", "openai")  # no token-level calls (a fake; a remote server)


def runtime_backend(model: str, backend: str = "auto", dtype: str | None = None) -> str:
    """The backend ``backend`` resolves to for ``model``: a registered name, or auto (llamacpp when
    the model is or holds a .gguf and llama-cpp-python is installed, else hf). A ``dtype`` for
    llama.cpp is refused: its GGUF keeps its own tensor types."""
    from pathlib import Path

    if backend == "auto":
        p = Path(model).expanduser()
        has_gguf = (p.suffix == ".gguf" and p.is_file()) or (p.is_dir() and any(p.glob("*.gguf")))
        backend = "llamacpp" if has_gguf or model == "gemma3-270m" else "hf"
        if backend == "llamacpp":
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                backend = "hf"
    if backend == "llamacpp" and dtype:
        raise MedslmError(f"--dtype {dtype}: {model} runs on llama.cpp, whose GGUF keeps its own tensor types; "
                          "drop --dtype, or export another type (medslm export --type f16|q8_0|...)")
    return backend


def load_runtime(model: str, backend: str = "auto", **kw: Any) -> Runtime:
    """One serving runtime of ``model`` on ``backend`` (see :func:`runtime_backend`)."""
    backend = runtime_backend(model, backend, kw.get("dtype"))
    if backend == "vllm":
        raise MedslmError("the vllm runtime is one engine shared by every slot: build it with "
                          "medslm.serve.server.load_runtimes (medslm serve --runtime vllm)")
    if backend not in BACKENDS or backend in NOT_SERVING:
        raise MedslmError(f"--backend {backend!r}: choose auto or a serving backend "
                          f"({', '.join(n for n in BACKENDS.names() if n not in NOT_SERVING)})")
    if backend == "llamacpp":
        kw.pop("device", None), kw.pop("dtype", None)
        kw.setdefault("n_ctx", 2048)
    elif "n_ctx" in kw:
        kw["max_length"] = kw.pop("n_ctx")
    return BackendRuntime(BACKENDS.get(backend)(model, **kw), model)

