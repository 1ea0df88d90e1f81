"""Pruning: unstructured (magnitude, Wanda), N:M semi-structured, and structured depth/width.

- ``magnitude``: drop the smallest |W| in each output row.
- ``wanda`` (Sun et al. 2023, https://arxiv.org/abs/2306.11695): score |W_ij| * ||X_j||_2 with the
  input-feature norms X measured on a calibration corpus, pruned per output row. One calibration
  pass over the dense model (the paper's sequential variant re-measures after each block).
- ``sparsegpt`` (Frantar & Alistarh 2023, https://arxiv.org/abs/2301.00774): prune by the
  optimal-brain-surgeon saliency w^2 / [H^-1]_jj^2 with H = X^T X from the calibration activations,
  and update the remaining weights of each row to compensate (column by column, in blocks of 128).
  Written here because llm-compressor's implementation pins another transformers; one calibration
  pass over the dense model, like ``wanda`` here (the paper's sequential variant re-measures).
- ``pattern: "2:4"``: keep N of every M consecutive weights of a row (NVIDIA's 2:4 sparsity), by the
  method's score.
- ``depth`` (ShortGPT, Men et al. 2024, https://arxiv.org/abs/2403.03853): remove the decoder
  blocks with the lowest Block Influence 1 - cos(h_in, h_out) on the calibration corpus; the model
  really gets smaller (fewer layers in its config).
- ``width``: remove the MLP channels with the smallest mean activation magnitude, the same number in
  every block, shrinking ``intermediate_size`` (gate/up/down MLPs: Gemma, Llama, Mistral).
- ``heads``: remove whole attention (query) heads, the same number in every block and in every
  key/value group (so grouped-query attention stays uniform), shrinking ``num_attention_heads``;
  a head's importance is its contribution to the output projection on the calibration corpus,
  sum over its dimensions j of ||X_j||^2 ||W_o[:, j]||^2 (the structured analogue of Wanda's score;
  cf. Michel et al. 2019, https://arxiv.org/abs/1905.10650, and Minitron's activation-based head
  importance, https://arxiv.org/abs/2407.14679). Separate q/k/v/o projections: Gemma, Llama, Mistral.

Calibration is a parameter (``calibration: pubmedqa,medquad`` by default: medical text, the point of
domain pruning, D-Pruner https://arxiv.org/abs/2405.06275); any dataset name, ``generic`` (non-medical
English, see :func:`generic_texts`) or a text file works.
Unstructured results are stored dense with zeros; the achieved sparsity is measured and recorded.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import field_validator, model_validator
from torch import nn

from medslm.errors import MedslmError
from medslm.methods.base import CalibratedConfig, Transformed, load_dense
from medslm.methods.calibration import (calibration_batches, calibration_texts, hessian_factor,
                                        input_hessians, input_norms)
from medslm.models.anatomy import decoder_layers, is_linear, linear_weight


class PruneConfig(CalibratedConfig):
    method: Literal["prune"] = "prune"
    algorithm: Literal["magnitude", "wanda", "sparsegpt", "depth", "width", "heads"] = "wanda"
    sparsity: float = 0.5
    pattern: str | None = None  # "N:M", e.g. "2:4" (then sparsity is N/M's)

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"sparsity={v}: must be between 0 and 1 (exclusive), e.g. 0.5")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            n, m = (int(x) for x in v.split(":"))
        except ValueError:
            raise ValueError(f"pattern={v!r}: must be 'N:M' with integers, e.g. '2:4'") from None
        if not 0 < n < m:
            raise ValueError(f"pattern={v!r}: need 0 < N < M")
        return v

    @model_validator(mode="after")
    def _combo(self):
        if self.pattern and self.algorithm in ("depth", "width", "heads"):
            raise ValueError(f"pattern={self.pattern!r} applies to magnitude/wanda/sparsegpt, not {self.algorithm}")
        return self


def _prunable(model: nn.Module) -> dict[str, nn.Module]:
    layers = decoder_layers(model)
    return {n: m for n, m in layers.named_modules() if is_linear(m)}


# ------------------------------------------------------------------------------ unstructured
def mask_from_scores(score: torch.Tensor, sparsity: float, pattern: str | None) -> torch.Tensor:
    """True = keep. Per output row: the lowest-scoring fraction, or N of every M."""
    if pattern:
        n, m = (int(x) for x in pattern.split(":"))
        rows, cols = score.shape
        if cols % m:
            raise MedslmError(f"pattern {pattern}: {cols} input features are not a multiple of {m}")
        g = score.reshape(rows, cols // m, m)
        keep = torch.zeros_like(g, dtype=torch.bool)
        keep.scatter_(-1, g.topk(n, dim=-1).indices, True)
        return keep.reshape(rows, cols)
    k = int(score.shape[1] * sparsity)
    keep = torch.ones_like(score, dtype=torch.bool)
    if k:
        keep.scatter_(1, score.topk(k, dim=1, largest=False).indices, False)
    return keep


def sparsegpt_(w: torch.Tensor, H: torch.Tensor, sparsity: float, pattern: str | None,
               damp: float = 0.01, blocksize: int = 128) -> None:
    """Prune ``w`` (out, in) in place with SparseGPT's mask selection and weight update.

    Per block of columns, each row drops its lowest-saliency fraction (or N of every M); after each
    column the error is spread over the row's later columns through the inverse Hessian's Cholesky
    factor, so the layer's output on the calibration inputs changes as little as possible.
    """
    W, Hinv = hessian_factor(w, H, damp, "sparsegpt")
    rows, cols = W.shape
    n_keep_pattern = None
    if pattern:
        pn, pm = (int(x) for x in pattern.split(":"))
        n_keep_pattern = (pn, pm)
        if cols % pm:
            raise MedslmError(f"pattern {pattern}: {cols} input features are not a multiple of {pm}")
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        if n_keep_pattern is None:
            sal = W1 ** 2 / d[None, :] ** 2
            k = int(round((i2 - i1) * sparsity))
            prune = torch.zeros_like(W1, dtype=torch.bool)
            if k:
                prune.scatter_(1, sal.topk(k, dim=1, largest=False).indices, True)
        else:
            prune = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if n_keep_pattern is not None and i % n_keep_pattern[1] == 0:
                pn, pm = n_keep_pattern
                sal = W1[:, i:i + pm] ** 2 / d[None, i:i + pm] ** 2
                prune[:, i:i + pm].scatter_(1, sal.topk(pm - pn, dim=1, largest=False).indices, True)
            col = W1[:, i]
            q = col.clone()
            q[prune[:, i]] = 0.0
            Q1[:, i] = q
            err = (col - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    w.copy_(W.to(w.dtype))


def prune_unstructured_(model, cfg: PruneConfig, batches) -> dict:
    modules = _prunable(model)
    if cfg.algorithm == "sparsegpt":
        hess = input_hessians(model, batches, modules)
        zeros = total = 0
        for n, m in modules.items():
            w = linear_weight(m)
            with torch.no_grad():
                sparsegpt_(w, hess.pop(n), cfg.sparsity, cfg.pattern, cfg.damp)
            zeros += int((w == 0).sum())
            total += w.numel()
        return {"achieved_sparsity": round(zeros / total, 6), "pruned_layers": len(modules)}
    norms = input_norms(model, batches, modules) if cfg.algorithm == "wanda" else {}
    zeros = total = 0
    for n, m in modules.items():
        w = linear_weight(m)  # (out, in) view
        score = w.abs().float()
        if cfg.algorithm == "wanda":
            score = score * norms[n].sqrt()[None, :]
        keep = mask_from_scores(score, cfg.sparsity, cfg.pattern)
        w.mul_(keep.to(w.dtype))  # in place through the view: Conv1D's .t() shares storage
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"achieved_sparsity": round(zeros / total, 6), "pruned_layers": len(modules)}


# ------------------------------------------------------------------------------ structured
def block_influence(model, batches) -> list[float]:
    layers = decoder_layers(model)
    acc = [0.0] * len(layers)
    count = [0] * len(layers)

    def hook(i):
        def f(mod, args, kwargs, out):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = out[0] if isinstance(out, tuple) else out
            cos = nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
            acc[i] += float((1 - cos).sum())
            count[i] += cos.numel()
        return f

    hs = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for b in batches:
                model(b)
    finally:
        for h in hs:
            h.remove()
    return [a / max(c, 1) for a, c in zip(acc, count)]


def prune_depth_(model, cfg: PruneConfig, batches) -> dict:
    bi = block_influence(model, batches)
    layers = decoder_layers(model)
    n_remove = int(round(len(layers) * cfg.sparsity))
    if not 0 < n_remove < len(layers):
        raise MedslmError(f"depth pruning at sparsity {cfg.sparsity} removes {n_remove} of "
                          f"{len(layers)} blocks; choose a sparsity that removes at least one and keeps one")
    drop = sorted(sorted(range(len(layers)), key=lambda i: bi[i])[:n_remove])
    keep = [i for i in range(len(layers)) if i not in drop]
    new = nn.ModuleList([layers[i] for i in keep])
    for j, layer in enumerate(new):  # caches index blocks by position
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = j
    parent = next(m for m in model.modules() if any(c is layers for c in m.children()))
    name = next(n for n, c in parent.named_children() if c is layers)
    setattr(parent, name, new)
    cfg_m = model.config
    cfg_m.num_hidden_layers = len(keep)
    if getattr(cfg_m, "layer_types", None):
        cfg_m.layer_types = [cfg_m.layer_types[i] for i in keep]
    return {"removed_blocks": drop, "block_influence": [round(x, 5) for x in bi]}


def _keep_outputs(old: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A smaller Linear with only the output features ``idx`` of ``old``."""
    new = nn.Linear(old.in_features, len(idx), bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.data = old.weight.data[idx].clone()
    if old.bias is not None:
        new.bias.data = old.bias.data[idx].clone()
    return new


def _keep_inputs(old: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A smaller Linear reading only the input features ``idx`` of ``old``."""
    new = nn.Linear(len(idx), old.out_features, bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.data = old.weight.data[:, idx].clone()
    if old.bias is not None:
        new.bias.data = old.bias.data.clone()
    return new


def prune_width_(model, cfg: PruneConfig, batches) -> dict:
    layers = decoder_layers(model)
    mlps = [getattr(layer, "mlp", None) for layer in layers]
    if not all(m is not None and all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj"))
               for m in mlps):
        raise MedslmError(f"width pruning supports gate/up/down MLPs (Gemma, Llama, Mistral), not "
                          f"{type(model).__name__}; use algorithm=depth, wanda or magnitude")
    downs = {str(i): m.down_proj for i, m in enumerate(mlps)}
    norms = input_norms(model, batches, downs)  # activations entering down_proj = channel importance
    inter = mlps[0].down_proj.in_features
    keep_n = inter - int(inter * cfg.sparsity)
    for i, m in enumerate(mlps):
        idx = norms[str(i)].topk(keep_n).indices.sort().values
        m.gate_proj, m.up_proj = _keep_outputs(m.gate_proj, idx), _keep_outputs(m.up_proj, idx)
        m.down_proj = _keep_inputs(m.down_proj, idx)
        if hasattr(m, "intermediate_size"):
            m.intermediate_size = keep_n
    model.config.intermediate_size = keep_n
    return {"intermediate_size": [inter, keep_n]}


def prune_heads_(model, cfg: PruneConfig, batches) -> dict:
    layers = decoder_layers(model)
    attns = [getattr(layer, "self_attn", None) for layer in layers]
    if not all(a is not None and all(hasattr(a, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
               for a in attns):
        raise MedslmError(f"head pruning supports separate q/k/v/o projections (Gemma, Llama, Mistral), "
                          f"not {type(model).__name__}; use algorithm=depth, width or wanda")
    c = model.config
    n_heads, n_kv = c.num_attention_heads, c.num_key_value_heads
    head_dim = attns[0].head_dim
    group = n_heads // n_kv
    drop_per_group = int(group * cfg.sparsity)
    if not 0 < drop_per_group < group:
        raise MedslmError(f"head pruning at sparsity {cfg.sparsity} removes {drop_per_group} of the {group} "
                          f"query heads per key/value head ({n_heads} heads, {n_kv} key/value heads); choose "
                          f"a sparsity between {1 / group:g} and {(group - 1) / group:g}")
    keep_g = group - drop_per_group
    hidden = c.hidden_size
    if hidden % (n_kv * keep_g):  # transformers' config validation insists, even with head_dim set
        ok = [f"{(group - k) / group:g} ({n_kv * k} head{'s' if n_kv * k > 1 else ''})"
              for k in range(group - 1, 0, -1) if hidden % (n_kv * k) == 0]
        raise MedslmError(f"head pruning at sparsity {cfg.sparsity} leaves {n_kv * keep_g} attention heads, "
                          f"which does not divide hidden_size {hidden} (transformers refuses such a config); "
                          f"choose sparsity {' or '.join(ok) if ok else 'another method: no head count fits'}")
    norms = input_norms(model, batches, {str(i): a.o_proj for i, a in enumerate(attns)})
    removed = []
    for i, a in enumerate(attns):
        wo = a.o_proj.weight.data.float()  # (hidden, heads * head_dim)
        score = (norms[str(i)] * (wo ** 2).sum(0)).reshape(n_kv, group, head_dim).sum(-1)  # (kv, group)
        keep = score.topk(keep_g, dim=1).indices.sort(dim=1).values + torch.arange(n_kv)[:, None] * group
        keep = keep.flatten()
        removed.append(sorted(set(range(n_heads)) - set(keep.tolist())))
        rows = (keep[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()
        a.q_proj, a.o_proj = _keep_outputs(a.q_proj, rows), _keep_inputs(a.o_proj, rows)
        a.num_key_value_groups = keep_g
        if hasattr(a, "num_heads"):
            a.num_heads = n_kv * keep_g
    c.num_attention_heads = n_kv * keep_g
    c.head_dim = head_dim  # explicit: it no longer equals hidden_size // num_attention_heads
    return {"num_attention_heads": [n_heads, n_kv * keep_g], "removed_heads": removed}


def apply(art, cfg: PruneConfig) -> Transformed:
    model, tok = load_dense(art, "prune")
    batches = []
    if cfg.algorithm != "magnitude":
        batches = calibration_batches(tok, calibration_texts(cfg.calibration, cfg.samples, cfg.seed),
                                      cfg.seq_len)
    before = sum(p.numel() for p in model.parameters())
    if cfg.algorithm in ("magnitude", "wanda", "sparsegpt"):
        info = prune_unstructured_(model, cfg, batches)
    elif cfg.algorithm == "depth":
        info = prune_depth_(model, cfg, batches)
    elif cfg.algorithm == "heads":
        info = prune_heads_(model, cfg, batches)
    else:
        info = prune_width_(model, cfg, batches)
    info["parameters_before"] = before
    info["parameters_after"] = sum(p.numel() for p in model.parameters())
    info["calibration_tokens"] = sum(b.numel() for b in batches)
    return Transformed(model, tok, info=info,
                       extra={"sparsity": info.get("achieved_sparsity"), "pruning": cfg.algorithm})
