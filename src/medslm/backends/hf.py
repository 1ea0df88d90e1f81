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

from medslm.backends.base import Backend, GenerateRequest, LoglikelihoodRequest, RollingRequest
from medslm.system import cpu_name
from medslm.errors import MedslmError


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
        self.add_bos = ("gemma" in model_type) if add_bos is None else bool(add_bos)
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

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_bos).input_ids

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:  # lm-eval: BOS (or EOS) as the context
            cont = self._encode(continuation)
            if self.add_bos and cont and cont[0] == self.prefix_token_id:
                cont = cont[1:]
            return [self.prefix_token_id], cont
        whole = self._encode(context + continuation)
        ctx = self._encode(context)
        return ctx, whole[len(ctx):]

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
            return [self._score_logits(logits[i, pos], tgt)
                    for i, (pos, tgt) in enumerate(zip(positions, targets))]

    def _score_hidden(self, hidden, targets: list[int], chunk: int = 128) -> tuple[float, bool]:
        """Score targets from the hidden states that predict them, applying the head per chunk."""
        ll, greedy = 0.0, True
        for j in range(0, len(targets), chunk):
            a, g = self._score_logits(self._head(hidden[j:j + chunk]), targets[j:j + chunk])
            ll, greedy = ll + a, greedy and g
        return ll, greedy

    @staticmethod
    def _score_logits(logits, targets: list[int]) -> tuple[float, bool]:
        import torch

        logits = logits.float()
        t = torch.tensor(targets, device=logits.device)
        ll = (logits.gather(-1, t[:, None])[:, 0] - torch.logsumexp(logits, -1)).sum().item()
        greedy = bool((logits.argmax(-1) == t).all().item())
        return float(ll), greedy

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
            ctx, cont = self._encode_pair(r.context, r.continuation)
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
                        results[i] = self._score_logits(logp[k:k + 1], pairs[i][1])
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
            ids = self._encode(r.context) if r.context else [self.prefix_token_id]
            budget = self.max_length - r.max_tokens
            if budget < 1:
                raise MedslmError(f"max_tokens {r.max_tokens} leaves no room for the prompt in a "
                                  f"context of {self.max_length}")
            ids = ids[-budget:]
            gc = GenerationConfig(max_new_tokens=r.max_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
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
                self._hash = _weights_hash(self.model)
            d.update(hash=self._hash, bytes=params * next(self.model.parameters()).element_size())
        if str(self.device).startswith("cuda"):
            d["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            d["cpu"] = cpu_name()
        return d


def _cache_of(out):
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


def cut_at_stop(text: str, until: Iterable[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in until or ():
        if s:
            j = text.find(s)
            if j != -1:
                cut = min(cut, j)
    return text[:cut]


def _weights_hash(model) -> str:
    """Hash of every weight byte: two in-memory models share request-cache entries only if equal."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "weights:" + h.hexdigest()[:16]
