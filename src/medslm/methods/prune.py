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

This module is the ``prune`` family: its config fields, the layer selection, masks and the
structured slicing helpers are shared; each algorithm is one module (``magnitude``, ``wanda``,
``sparsegpt``, ``depth``, ``width``, ``heads``) with its config and ``prune_(model, cfg, batches)``.

Calibration is a parameter (``calibration: pubmedqa,medquad`` by default: medical text, the point of
domain pruning, D-Pruner https://arxiv.org/abs/2405.06275); any dataset name, ``generic`` (non-medical
English, see :func:`generic_texts`) or a text file works.
Unstructured results are stored dense with zeros; the achieved sparsity is measured and recorded.
"""

from __future__ import annotations

import sys
from typing import ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from medslm.errors import MedslmError
from medslm.methods.base import CalibratedConfig, Transformed, load_dense
from medslm.methods.calibration import calibration_batches, calibration_texts
from medslm.models.anatomy import decoder_layers, is_linear, linear_weight


class PruneConfig(CalibratedConfig):
    """Fields every pruning algorithm shares; each algorithm's module registers a subclass."""

    method: str = "prune"
    algorithm: str
    sparsity: float = Field(0.5, description="fraction removed (weights, blocks, channels or heads)")
    needs_calibration: ClassVar[bool] = True

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"sparsity={v}: must be between 0 and 1 (exclusive), e.g. 0.5")
        return v


class UnstructuredConfig(PruneConfig):
    """Unstructured and N:M pruning of the blocks' linear layers by a per-weight score."""

    pattern: str | None = Field(None, description="N:M semi-structured, e.g. 2:4 (then sparsity is N/M's)")

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


def prunable(model: nn.Module) -> dict[str, nn.Module]:
    layers = decoder_layers(model)
    return {n: m for n, m in layers.named_modules() if is_linear(m)}


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


def mask_by_score_(model, cfg: UnstructuredConfig, score) -> dict:
    """Zero the lowest-scoring weights of each prunable layer; ``score(name, weight)`` -> scores."""
    modules = prunable(model)
    zeros = total = 0
    for n, m in modules.items():
        w = linear_weight(m)  # (out, in) view
        keep = mask_from_scores(score(n, w), cfg.sparsity, cfg.pattern)
        w.mul_(keep.to(w.dtype))  # in place through the view: Conv1D's .t() shares storage
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"achieved_sparsity": round(zeros / total, 6), "pruned_layers": len(modules)}


def block_parts(model, attr: str, needs: tuple[str, ...], what: str, instead: str) -> list:
    """Each decoder block's ``attr`` submodule (``mlp``, ``self_attn``); an architecture whose
    blocks lack the ``needs`` projections is refused, naming the algorithms to use ``instead``."""
    parts = [getattr(layer, attr, None) for layer in decoder_layers(model)]
    if not all(p is not None and all(hasattr(p, n) for n in needs) for p in parts):
        raise MedslmError(f"{what} (Gemma, Llama, Mistral), not {type(model).__name__}; use algorithm={instead}")
    return parts


def keep_outputs(old: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A smaller Linear with only the output features ``idx`` of ``old``."""
    new = nn.Linear(old.in_features, len(idx), bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.data = old.weight.data[idx].clone()
    if old.bias is not None:
        new.bias.data = old.bias.data[idx].clone()
    return new


def keep_inputs(old: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A smaller Linear reading only the input features ``idx`` of ``old``."""
    new = nn.Linear(len(idx), old.out_features, bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.data = old.weight.data[:, idx].clone()
    if old.bias is not None:
        new.bias.data = old.bias.data.clone()
    return new


def apply(art, cfg: PruneConfig) -> Transformed:
    """The family's handler: calibration batches (if the algorithm needs them), the algorithm's
    ``prune_`` (its module's), and the facts recorded about the step."""
    model, tok = load_dense(art, "prune")
    batches = []
    if cfg.needs_calibration:
        batches = calibration_batches(tok, calibration_texts(cfg.calibration, cfg.samples, cfg.seed),
                                      cfg.seq_len)
    before = sum(p.numel() for p in model.parameters())
    info = sys.modules[type(cfg).__module__].prune_(model, cfg, batches)
    info["parameters_before"] = before
    info["parameters_after"] = sum(p.numel() for p in model.parameters())
    info["calibration_tokens"] = sum(b.numel() for b in batches)
    return Transformed(model, tok, info=info,
                       extra={"sparsity": info.get("achieved_sparsity"), "pruning": cfg.algorithm})
