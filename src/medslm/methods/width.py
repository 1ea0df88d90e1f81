"""Width pruning: remove the MLP channels with the smallest mean activation magnitude, the same
number in every block, shrinking ``intermediate_size`` (gate/up/down MLPs: Gemma, Llama, Mistral)."""

from __future__ import annotations

from typing import Literal

from medslm.methods.base import register_method
from medslm.methods.calibration import input_norms
from medslm.methods.prune import PruneConfig, apply, block_parts, keep_inputs, keep_outputs

__all__ = ["WidthConfig", "apply", "prune_"]


@register_method("prune", "width")
class WidthConfig(PruneConfig):
    algorithm: Literal["width"] = "width"


def prune_(model, cfg: WidthConfig, batches) -> dict:
    mlps = block_parts(model, "mlp", ("gate_proj", "up_proj", "down_proj"),
                       "width pruning supports gate/up/down MLPs", "depth, wanda or magnitude")
    downs = {str(i): m.down_proj for i, m in enumerate(mlps)}
    norms = input_norms(model, batches, downs)  # activations entering down_proj = channel importance
    inter = mlps[0].down_proj.in_features
    keep_n = inter - int(inter * cfg.sparsity)
    for i, m in enumerate(mlps):
        idx = norms[str(i)].topk(keep_n).indices.sort().values
        m.gate_proj, m.up_proj = keep_outputs(m.gate_proj, idx), keep_outputs(m.up_proj, idx)
        m.down_proj = keep_inputs(m.down_proj, idx)
        if hasattr(m, "intermediate_size"):
            m.intermediate_size = keep_n
    model.config.intermediate_size = keep_n
    return {"intermediate_size": [inter, keep_n]}



