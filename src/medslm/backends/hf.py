"""The ``hf`` backend: transformers models on CPU or CUDA.

Scoring follows lm-evaluation-harness exactly (``_encode_pair``: trailing spaces of the context move
to the continuation; the continuation's tokens are those of ``context + continuation`` after the
context's own tokens; a BOS token is added for the Gemma family), but it is faster in two ways:

* **Logits only where scored.** Gemma 3 270M's tied 262k x 640 embedding is 63% of its weights; the
  LM head over every position costs more than the transformer body. We run the body, gather the
  hidden states of the scored positions and apply the head to those alone.
* **Shared context.** Requests with the same context (the options of one question) encode the
  context once. Single-token continuations (yes/no/maybe, A-D) are read off the context's last
  position; longer ones continue from the context's KV cache.

Both are checked against direct computation from the full logits in the tests.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Iterable

from medslm.backends.base import (Backend, GenerateRequest, LoglikelihoodRequest, RollingRequest, cut_at_stop,
                                  target_logprobs, wants_bos)
from medslm.errors import MedslmError
from medslm.system import cpu_name


def _chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class HFBackend(Backend):
    """transformers backend.

    Args:
        model: a model reference (path, preset, hub id) or an already loaded ``PreTrainedModel``.
        tokenizer: required when ``model`` is a loaded model.
        dtype: fp32 | bf16 | fp16 (default fp32 on CPU, bf16 on CUDA).
        device: cpu | cuda | cuda:N | auto.
        batch_size: sequences per forward pass.
        max_length: context window used for scoring (default: the model's, capped at 4096).
        add_bos: prepend BOS when encoding (default: as lm-evaluation-harness, only for Gemma).
        shared_context: encode a shared context once (default True).
        threads: torch CPU threads (default: torch's choice).
    """

    name = "hf"
    show_progress = True  # the evaluation runner shows its own progress bar and turns this off

    def __init__(self, model: Any = "gemma3-270m", tokenizer: Any = None, *, dtype: str | None = None,
                 device: str = "cpu", batch_size: int = 8, max_length: int | None = None,
                 add_bos: bool | None = None, shared_context: bool = True,
                 threads: int | None = None, **_: Any):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise MedslmError(f"--device {device}: CUDA is not available here; use --device cpu")
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.shared_context = shared_context
        self.artifact = None
        self._hash: str | None = None  # of in-memory weights, computed once (keys the request cache)
        if isinstance(model, str):
            from medslm.models.loading import resolve

            self.artifact = resolve(model).artifact()
            self.model, self.tokenizer = self.artifact.load(dtype=dtype, device=device)
            self.ref = model
        else:
            if tokenizer is None:
                raise MedslmError("HFBackend(model=<loaded model>) needs tokenizer=")
            self.model, self.tokenizer = model, tokenizer
            self.model.eval()
            if device != "cpu":
                self.model.to(device)
            self.ref = getattr(model, "name_or_path", "in-memory")
        cfg = self.model.config
        model_type = getattr(cfg, "model_type", "") or ""
        self.add_bos = wants_bos(model_type) if add_bos is None else bool(add_bos)
        tok = self.tokenizer
        self.prefix_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ctx = (getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
               or 2048)
        self.max_length = int(max_length or min(ctx, 4096))
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.body = self.model.base_model
        self.head = self.model.get_output_embeddings()
        import inspect

        # transformers 5.2x renamed `past_key_values` to `cache`; accept both
        params = inspect.signature(self.body.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._check_head()
        self._serving_facts()

    # ------------------------------------------------------------------ internals
    def _check_head(self) -> None:
        """Verify that head(body(x)) equals the model's own logits, else fall back to full logits."""
        import torch

        ids = torch.tensor([[self.prefix_token_id] + [min(5, self.model.config.vocab_size - 1)] * 3],
                           device=self.device)
        with torch.no_grad():
            ref = self.model(ids).logits.float()
            mine = self._head(self.body(ids).last_hidden_state)
        self.fast_head = bool(torch.allclose(ref, mine, atol=1e-4, rtol=1e-4))

    def _head(self, hidden):
        import torch

        logits = self.head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def tokens(self, text: str, bos: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=bos).input_ids

    def _score_at(self, rows: list[list[int]], positions: list[list[int]],
                  targets: list[list[int]]) -> list[tuple[float, bool]]:
        """Run a right-padded batch; per row, the summed log-probability of ``targets`` at
        ``positions`` and whether each is the argmax. The vocabulary-wide log-softmax is computed
        in chunks of positions and never kept (262k x a long document would be gigabytes)."""
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        ids = ids.to(self.device)
        with torch.no_grad():
            if self.fast_head:
                hidden = self.body(ids, use_cache=False).last_hidden_state
                return [self._score_hidden(hidden[i, pos], tgt)
                        for i, (pos, tgt) in enumerate(zip(positions, targets))]
            logits = self.model(ids, use_cache=False).logits
            return [target_logprobs(logits[i, pos], tgt)
                    for i, (pos, tgt) in enumerate(zip(positions, targets))]

    def _score_hidden(self, hidden, targets: list[int], chunk: int = 128) -> tuple[float, bool]:
        """Score targets from the hidden states that predict them, applying the head per chunk."""
        ll, greedy = 0.0, True
        for j in range(0, len(targets), chunk):
            a, g = target_logprobs(self._head(hidden[j:j + chunk]), targets[j:j + chunk])
            ll, greedy = ll + a, greedy and g
        return ll, greedy

    def _truncate(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate so that context + continuation[:-1] fits in ``max_length``."""
        overflow = len(ctx) + len(cont) - 1 - self.max_length
        if overflow > 0:
            if len(cont) > self.max_length:
                raise MedslmError(f"a continuation of {len(cont)} tokens exceeds the context window "
                                  f"({self.max_length}); raise --max-length")
            ctx = ctx[overflow:]
        return ctx, cont

    # ------------------------------------------------------------------ API
    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        from tqdm.auto import tqdm

        pairs = []
        for r in requests:
            ctx, cont = self.encode_pair(r.context, r.continuation)
            if not cont:
                raise MedslmError(f"empty continuation for context ...{r.context[-40:]!r}")
            pairs.append(self._truncate(ctx, cont))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="loglikelihood", unit="req", leave=False,
                   disable=len(requests) < 32 or not self.show_progress)
        if self.shared_context:
            self._shared(pairs, results, bar)
        else:
            self._pairwise(pairs, list(range(len(pairs))), results, bar)
        bar.close()
        return results  # type: ignore[return-value]

    def _pairwise(self, pairs, idx: list[int], results, bar) -> None:
        order = sorted(idx, key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for batch in _chunks(order, self.batch_size):
            rows, positions = [], []
            for i in batch:
                ctx, cont = pairs[i]
                seq = (ctx + cont)[:-1]
                rows.append(seq)
                positions.append(list(range(len(ctx) - 1, len(seq))))
            for i, res in zip(batch, self._score_at(rows, positions, [pairs[i][1] for i in batch])):
                results[i] = res
            bar.update(len(batch))

    def _shared(self, pairs, results, bar) -> None:
        import torch

        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (ctx, _) in enumerate(pairs):
            groups[tuple(ctx)].append(i)
        single = [g for g, ix in groups.items() if all(len(pairs[i][1]) == 1 for i in ix)]
        multi = [g for g, ix in groups.items() if not all(len(pairs[i][1]) == 1 for i in ix)]
        # 1) single-token continuations: one forward per context, read the last position
        single.sort(key=len, reverse=True)
        for batch in _chunks(single, self.batch_size):
            rows = [list(g) for g in batch]
            pos = [[len(g) - 1] for g in batch]
            if self.fast_head:
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), 0, dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, : len(r)] = torch.tensor(r)
                with torch.no_grad():
                    hidden = self.body(ids.to(self.device), use_cache=False).last_hidden_state
                    last = torch.stack([hidden[i, p[0]] for i, p in enumerate(pos)])
                    logp = self._head(last).float().log_softmax(-1)  # one row per context
            for k, g in enumerate(batch):
                for i in groups[g]:
                    if self.fast_head:
                        results[i] = target_logprobs(logp[k:k + 1], pairs[i][1])
                    else:
                        results[i] = self._score_at([rows[k]], [pos[k]], [pairs[i][1]])[0]
                bar.update(len(groups[g]))
        # 2) longer continuations: context once with its KV cache, continuations from there
        if not self.fast_head:
            self._pairwise(pairs, [i for g in multi for i in groups[g]], results, bar)
            return
        for g in multi:
            ix = groups[g]
            with torch.no_grad():
                out = self.body(torch.tensor([list(g)], device=self.device), use_cache=True)
                past = _cache_of(out)
                last = out.last_hidden_state[0, -1:]
                for i in ix:
                    cont = pairs[i][1]
                    if len(cont) == 1:
                        results[i] = self._score_hidden(last, cont)
                        continue
                    o2 = self.body(torch.tensor([cont[:-1]], device=self.device), use_cache=True,
                                   **{self._cache_kw: copy.deepcopy(past)})
                    results[i] = self._score_hidden(torch.cat([last, o2.last_hidden_state[0]]), cont)
            bar.update(len(ix))

    def loglikelihood_rolling(self, requests: list[RollingRequest]) -> list[float]:
        """Disjoint windows of ``max_length`` tokens, each predicting its own tokens (lm-eval's
        rolling windows with context length 1); the first window is conditioned on BOS/EOS."""
        from tqdm.auto import tqdm

        out = []
        for r in tqdm(requests, desc="rolling", unit="doc", leave=False, disable=len(requests) < 8 or not self.show_progress):
            toks = self.tokenizer(r.text, add_special_tokens=False).input_ids
            if not toks:
                raise MedslmError("loglikelihood_rolling got an empty text")
            seq = [self.prefix_token_id] + toks
            total = 0.0
            L = self.max_length
            windows = []
            for start in range(0, len(toks), L):
                end = min(start + L, len(toks))
                windows.append((seq[start:end], toks[start:end]))
            for batch in _chunks(windows, self.batch_size):
                scores = self._score_at([w[0] for w in batch], [list(range(len(w[0]))) for w in batch],
                                        [w[1] for w in batch])
                total += sum(sc[0] for sc in scores)
            out.append(total)
        return out

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, requests: list[GenerateRequest]) -> list[str]:
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        outs = []
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        for r in tqdm(requests, desc="generate", unit="req", leave=False, disable=len(requests) < 4 or not self.show_progress):
            ids = self.tokens(r.context, self.add_bos) if r.context else [self.prefix_token_id]
            budget = self.max_length - r.max_tokens
            if budget < 1:
                raise MedslmError(f"max_tokens {r.max_tokens} leaves no room for the prompt in a "
                                  f"context of {self.max_length}")
            ids = ids[-budget:]
            gc = GenerationConfig(max_new_tokens=r.max_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad, eos_token_id=sorted(self.eos_ids) or None)
            kwargs: dict[str, Any] = {}
            if r.until:
                gc.stop_strings = list(r.until)
                kwargs["tokenizer"] = self.tokenizer
            x = torch.tensor([ids], device=self.device)
            with torch.no_grad():
                y = self.model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc,
                                        **kwargs)
            text = self.tokenizer.decode(y[0, len(ids):], skip_special_tokens=True)
            outs.append(cut_at_stop(text, r.until))
        return outs

    def describe(self) -> dict[str, Any]:
        import torch

        params = sum(p.numel() for p in self.model.parameters())
        d = {
            "backend": self.name, "model": str(self.ref), "parameters": params,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(self.device), "threads": torch.get_num_threads(),
            "max_length": self.max_length, "add_bos": self.add_bos,
            "scoring": "shared-context" if self.shared_context else "pairwise",
        }
        if self.artifact is not None:
            d.update(hash=self.artifact.hash, bytes=self.artifact.meta.bytes,
                     chain=self.artifact.step_chain(), path=str(self.artifact.path))
            ex = self.artifact.meta.extra
            if ex.get("trained_on"):
                d["trained_on"] = ex["trained_on"]
            if ex.get("contamination_allowed"):  # trained with --allow-overlap: said with every result
                d["overlap_allowed"] = True
                d["contamination_allowed"] = ex["contamination_allowed"]
        else:
            if self._hash is None:
                from medslm.models.weights import weights_hash

                self._hash = weights_hash(self.model)
            d.update(hash=self._hash, bytes=params * next(self.model.parameters()).element_size())
        if str(self.device).startswith("cuda"):
            d["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            d["cpu"] = cpu_name()
        return d


    # ------------------------------------------------------------------ token-level (serving)
    def _serving_facts(self) -> None:
        tok, cfg = self.tokenizer, self.model.config
        self.n_ctx = self.max_length
        self.bos_id = tok.bos_token_id
        self.bos_text = tok.bos_token or ""
        self.vocab_size = int(cfg.vocab_size)
        eos: set[int] = set()
        for e in (tok.eos_token_id, getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if isinstance(e, int):
                eos.add(e)
            elif isinstance(e, (list, tuple)):
                eos.update(int(x) for x in e)
        self.eos_ids = frozenset(eos)
        self.chat_template = getattr(tok, "chat_template", None) or None
        self.special_tokens = {"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""}
        self._seen: list[int] = []
        self._kv = None

    def tokenize(self, text: str, *, bos: bool | None = None, special: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special).input_ids
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_text(self, i: int) -> str:
        return self.tokenizer.decode([i], skip_special_tokens=False)

    def forward(self, ids: list[int], keep: int, all_logits: bool = False):
        import torch

        # the cache is reused only to extend the previous sequence (generation); anything else
        # starts over (cropping a sliding-window cache is not supported by every architecture)
        if not (0 < keep == len(self._seen) and self._seen == ids[:keep] and keep < len(ids)):
            keep, self._kv = 0, None
        x = torch.tensor([ids[keep:]], device=self.device)
        kw: dict[str, Any] = {"use_cache": True}
        if self._kv is not None:
            kw[self._cache_kw] = self._kv
        if not all_logits:
            kw["logits_to_keep"] = 1
        with torch.no_grad():
            out = self.model(input_ids=x, **kw)
        self._kv = out["cache"] if "cache" in out else out.get("past_key_values")
        self._seen = list(ids)
        return out.logits[0, -1:].float().cpu().numpy() if not all_logits else out.logits[0].float().cpu().numpy()


def _cache_of(out):
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


BACKEND = HFBackend
