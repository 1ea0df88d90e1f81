"""Fold an adapter artifact (LoRA/QLoRA from ``medslm finetune``) into a new dense artifact."""

from __future__ import annotations

from typing import Literal

from medslm.errors import MedslmError
from medslm.methods.base import MethodConfig, Transformed, register_method


@register_method("merge")
class MergeConfig(MethodConfig):
    method: Literal["merge"] = "merge"


def apply(art, cfg: MergeConfig) -> Transformed:
    ad = art.meta.extra.get("adapter")
    if not ad:
        raise MedslmError(f"merge: {art.path} is not an adapter artifact (nothing to merge)")
    model, tok = art.load(dtype="float32")  # base + adapter, merged in memory
    return Transformed(model, tok, info={"adapter_type": ad.get("type"), "base_hash": ad.get("base_hash")})
