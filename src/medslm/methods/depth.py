"""Depth pruning (ShortGPT, Men et al. 2024, https://arxiv.org/abs/2403.03853): remove the decoder
blocks with the lowest Block Influence 1 - cos(h_in, h_out) on the calibration corpus; the model
really gets smaller (fewer layers in its config)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medslm.errors import MedslmError
from medslm.methods.base import register_method
from medslm.methods.prune import PruneConfig, apply
from medslm.models.anatomy import decoder_layers

__all__ = ["DepthConfig", "apply", "block_influence", "prune_"]


@register_method("prune", "depth")
class DepthConfig(PruneConfig):
    algorithm: Literal["depth"] = "depth"


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


def prune_(model, cfg: DepthConfig, batches) -> dict:
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



