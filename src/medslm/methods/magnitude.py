"""Magnitude pruning: drop the smallest |W| in each output row (or N of every M); no
calibration."""

from __future__ import annotations

from typing import ClassVar, Literal

from medslm.methods.base import register_method
from medslm.methods.prune import UnstructuredConfig, apply, mask_by_score_

__all__ = ["MagnitudeConfig", "apply", "prune_"]


@register_method("prune", "magnitude")
class MagnitudeConfig(UnstructuredConfig):
    algorithm: Literal["magnitude"] = "magnitude"
    needs_calibration: ClassVar[bool] = False


def prune_(model, cfg: MagnitudeConfig, batches) -> dict:
    return mask_by_score_(model, cfg, lambda name, w: w.abs().float())

