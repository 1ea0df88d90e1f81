"""Where things are inside a transformers causal LM, for any architecture: its linear layers
(``nn.Linear`` or GPT-2's ``Conv1D``) and its list of decoder blocks. Methods, the quantized
storage format and exports all find layers through these functions, never through
``model.model.layers``."""

from __future__ import annotations

import torch
from torch import nn

from medslm.errors import MedslmError


def is_linear(mod: nn.Module) -> bool:
    """nn.Linear, or transformers' Conv1D (GPT-2's linear layers, weight stored transposed)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(mod, (nn.Linear, Conv1D))


def linear_weight(mod: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features), whatever the layer type."""
    return mod.weight.data if isinstance(mod, nn.Linear) else mod.weight.data.t()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks, found by length, for any architecture."""
    n = model.config.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise MedslmError(f"cannot find the {n} decoder blocks of {type(model).__name__}")


def blocks_prefix(model: nn.Module) -> str:
    """The module name of the decoder blocks' ModuleList, e.g. ``model.layers``."""
    layers = decoder_layers(model)
    return next(n for n, m in model.named_modules() if m is layers)


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
