"""SparseGPT (Frantar & Alistarh 2023, https://arxiv.org/abs/2301.00774): prune by the
optimal-brain-surgeon saliency w^2 / [H^-1]_jj^2 with H = X^T X from the calibration activations,
and update the remaining weights of each row to compensate (column by column, in blocks of 128).
Written here because llm-compressor's implementation pins another transformers; one calibration
pass over the dense model (the paper's sequential variant re-measures)."""

from __future__ import annotations

from typing import Literal

import torch

from medslm.errors import MedslmError
from medslm.methods.base import register_method
from medslm.methods.calibration import hessian_factor, input_hessians
from medslm.methods.prune import UnstructuredConfig, apply, prunable
from medslm.models.anatomy import linear_weight

__all__ = ["SparseGPTConfig", "apply", "prune_", "sparsegpt_"]


@register_method("prune", "sparsegpt")
class SparseGPTConfig(UnstructuredConfig):
    algorithm: Literal["sparsegpt"] = "sparsegpt"


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


def prune_(model, cfg: SparseGPTConfig, batches) -> dict:
    modules = prunable(model)
    hess = input_hessians(model, batches, modules)
    zeros = total = 0
    for n, m in modules.items():
        w = linear_weight(m)
        with torch.no_grad():
            sparsegpt_(w, hess.pop(n), cfg.sparsity, cfg.pattern, cfg.damp)
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"achieved_sparsity": round(zeros / total, 6), "pruned_layers": len(modules)}

