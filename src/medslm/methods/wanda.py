"""Wanda (Sun et al. 2023, https://arxiv.org/abs/2306.11695): score |W_ij| * ||X_j||_2 with the
input-feature norms X measured on a calibration corpus, pruned per output row. One calibration pass
over the dense model (the paper's sequential variant re-measures after each block)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medslm.methods.base import register_method
from medslm.methods.calibration import input_norms
from medslm.methods.prune import UnstructuredConfig, apply, mask_by_score_, prunable

__all__ = ["WandaConfig", "apply", "prune_"]


@register_method("prune", "wanda", default=True)
class WandaConfig(UnstructuredConfig):
    algorithm: Literal["wanda"] = Field("wanda", description="magnitude | wanda | sparsegpt | depth | width | "
                                        "heads (default wanda)")


def prune_(model, cfg: WandaConfig, batches) -> dict:
    norms = input_norms(model, batches, prunable(model))
    return mask_by_score_(model, cfg, lambda name, w: w.abs().float() * norms[name].sqrt()[None, :])

