"""Attention-head pruning: remove whole query heads, the same number in every block and in every
key/value group (so grouped-query attention stays uniform), shrinking ``num_attention_heads``. A
head's importance is its contribution to the output projection on the calibration corpus, sum over
its dimensions j of ||X_j||^2 ||W_o[:, j]||^2 (the structured analogue of Wanda's score; cf. Michel
et al. 2019, https://arxiv.org/abs/1905.10650, and Minitron's activation-based head importance,
https://arxiv.org/abs/2407.14679). Separate q/k/v/o projections: Gemma, Llama, Mistral."""

from __future__ import annotations

from typing import Literal

import torch

from medslm.errors import MedslmError
from medslm.methods.base import register_method
from medslm.methods.calibration import input_norms
from medslm.methods.prune import PruneConfig, apply, block_parts, keep_inputs, keep_outputs

__all__ = ["HeadsConfig", "apply", "prune_"]


@register_method("prune", "heads")
class HeadsConfig(PruneConfig):
    algorithm: Literal["heads"] = "heads"


def prune_(model, cfg: HeadsConfig, batches) -> dict:
    attns = block_parts(model, "self_attn", ("q_proj", "k_proj", "v_proj", "o_proj"),
                        "head pruning supports separate q/k/v/o projections", "depth, width or wanda")
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
        a.q_proj, a.o_proj = keep_outputs(a.q_proj, rows), keep_inputs(a.o_proj, rows)
        a.num_key_value_groups = keep_g
        if hasattr(a, "num_heads"):
            a.num_heads = n_kv * keep_g
    c.num_attention_heads = n_kv * keep_g
    c.head_dim = head_dim  # explicit: it no longer equals hidden_size // num_attention_heads
    return {"num_attention_heads": [n_heads, n_kv * keep_g], "removed_heads": removed}



