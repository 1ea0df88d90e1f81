"""GPTQ (Frantar et al. 2022, https://arxiv.org/abs/2210.17323): the quantize family's storage
(integers + per-group fp16 scales, so GPTQ artifacts load and run like RTN ones), with the integers
chosen column by column, each column's rounding error spread over the columns not yet quantized
through the inverse Hessian X^T X of a calibration corpus (medical text by default).

Written here (on calibration.py's Hessian hooks) because llm-compressor pins another transformers
and its output needs compressed-tensors to load. ``act_order`` visits columns by decreasing Hessian
diagonal with static groups; ``sequential`` calibrates each block on the outputs of the blocks
already quantized.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from medslm.methods.base import CalibratedConfig, register_method
from medslm.methods.calibration import (block_calls, calibration_batches, calibration_texts, collect_stat,
                                        forward_until, hessian_factor, input_hessians)
from medslm.methods.grids import dequant, qparams, round_codes
from medslm.methods.quantize import QuantizeConfig, apply, quantize_, rtn_codes, selected
from medslm.models.anatomy import blocks_prefix, decoder_layers, linear_weight
from medslm.models.quantized import QuantLinear, pack_codes

__all__ = ["GPTQConfig", "apply", "embedding_codes", "gptq_", "gptq_sequential_", "quantize_layers_",
           "quantize_linear", "recover"]


@register_method("quantize", "gptq")
class GPTQConfig(QuantizeConfig, CalibratedConfig):
    algorithm: Literal["gptq"] = "gptq"
    optional_stages: ClassVar[dict[str, tuple[str, ...]]] = {"recover_steps": ("recover_lr", "recover_scale_lr")}
    act_order: bool = Field(False, description="columns in order of decreasing Hessian diagonal "
                            "('act-order'/desc_act), with group scales fixed from the original weights")
    sequential: bool = Field(False, description="block by block, each block's Hessians measured on "
                             "the outputs of the blocks already quantized")
    recover_steps: int = Field(0, description="after GPTQ, train the integers and scales on their grid to "
                               "match the dense model's next-token distributions on the calibration texts "
                               "(quantization-aware distillation, medslm.methods.recover): optimizer steps of "
                               "4 texts; 0: off. The file keeps its tensor types and bytes")
    recover_lr: float = Field(0.005, description="recovery's learning rate of the latent integer codes (in "
                              "grid steps: a code changes when its latent value moves half a step)")
    recover_scale_lr: float = Field(0.0003, description="recovery's learning rate of the log group scales "
                                    "(Adam moves each by about this fraction a step; 0.002 raised the held-out KL of "
                                    "a GPTQ Q4_0 Gemma 3 270M in 100 steps, 0.0003 lowered it)")

    @field_validator("recover_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"recover_steps={v}: must be 0 (off) or a positive number of steps, e.g. 100")
        return v

    @field_validator("recover_lr", "recover_scale_lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"{v}: a learning rate between 0 and 1 (exclusive), e.g. 0.005")
        return v


def gptq_(w: torch.Tensor, H: torch.Tensor, bits: int, group: int, damp: float = 0.01,
          blocksize: int = 128, symmetric: bool = True, act_order: bool = False, clip: bool = False,
          fp16_min: bool = False, grid: tuple | None = None):
    """GPTQ integers (out, in), fp16 group scales and (asymmetric) uint8 zero points for ``w``
    given the input Hessian ``H``.

    With ``act_order`` the columns are visited by decreasing Hessian diagonal; a group's scale is then
    fixed beforehand from the original weights (static groups) so that groups stay contiguous in
    the original column order and the storage is the same as without it. ``fp16_min``: codes and
    error on the GGUF grid (offsets rounded to fp16, as Q4_1 stores them). ``grid``: (scale, offset
    or None) per group, fixed beforehand (a K-quant super-block's, :mod:`medslm.methods.kquant`):
    static groups on exactly that grid; the unpacked integer codes are returned alone.
    """
    W0 = w.detach().float()
    rows, cols = W0.shape
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    if act_order:
        H = H[perm][:, perm]
    W, Hinv = hessian_factor(W0[:, perm], H, damp, "gptq")
    Q = torch.zeros(rows, cols)
    scales = torch.zeros(rows, cols // group)
    zeros = None if symmetric else torch.zeros(rows, cols // group)
    fixed = grid is not None
    if fixed:
        from medslm.methods.kquant import grid_round
        scales, zeros = grid[0].float(), None if grid[1] is None else grid[1].float()
    elif act_order:  # static groups, from the original (dead inputs zeroed) weights
        Wg = torch.empty_like(W)
        Wg[:, perm] = W
        s_all, z_all = qparams(Wg.reshape(rows, cols // group, group), bits, symmetric, clip, fp16_min)
        scales[:] = s_all
        if zeros is not None:
            zeros[:] = z_all
    blocksize = max(group, blocksize - blocksize % group)
    s = z = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if act_order or fixed:
                g = int(perm[c]) // group
                s, z = scales[:, g], None if zeros is None else zeros[:, g]
            elif c % group == 0:  # the group's scale from its (error-updated) weights
                s, z = qparams(W1[:, i:i + group], bits, symmetric, clip, fp16_min)
                scales[:, c // group] = s
                if zeros is not None:
                    zeros[:, c // group] = z
            col = W1[:, i]
            if fixed:  # w = s * q + offset (z holds the offset)
                q = grid_round(col, s, z, bits)
                deq = s * q if z is None else s * q + z
            else:
                q = round_codes(col, s, z, bits, fp16_min)
                deq = dequant(q, s, z, fp16_min)
            Q[:, c] = q
            err = (col - deq) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    Qo = torch.empty_like(Q)
    Qo[:, perm] = Q
    if fixed:
        return Qo
    return (pack_codes(Qo, bits, symmetric), scales.to(torch.float16),
            None if zeros is None else zeros.to(torch.uint8))


def quantize_linear(lin: nn.Module, bits: int, group_size: int, hessian: torch.Tensor, damp: float = 0.01,
                    symmetric: bool = True, act_order: bool = False, clip: bool = False) -> QuantLinear:
    """A QuantLinear of ``lin`` with GPTQ's integers for the input Hessian ``hessian``."""
    w = linear_weight(lin)
    q, s, z = gptq_(w, hessian, bits, group_size, damp, symmetric=symmetric, act_order=act_order, clip=clip)
    return QuantLinear.from_codes(q, s, z, bits, group_size, w.shape[1], lin.bias)


def _codes(cfg: GPTQConfig, hessians: dict[str, torch.Tensor]):
    def codes(name: str, w: torch.Tensor, bits: int, grid: tuple | None = None):
        h = hessians.pop(name, None)
        sym, fp16_min = cfg.layer_format(bits)
        if grid is not None:  # a K-quant layer: (scale, offset, group) fixed; GPTQ's integers on it
            s, m, g = grid  # (a module the calibration never reached: None, its grid rounds to nearest)
            return None if h is None else gptq_(w, h, bits, g, cfg.damp, act_order=cfg.act_order, grid=(s, m))
        if h is None:  # a module the calibration never reached: round to nearest
            return rtn_codes(w, bits, cfg.group_size, sym, cfg.clip_search, fp16_min)
        return gptq_(w, h, bits, cfg.group_size, cfg.damp, symmetric=sym,
                     act_order=cfg.act_order, clip=cfg.clip_search, fp16_min=fp16_min)
    return codes


def embedding_codes(model: nn.Module, tok, cfg: GPTQConfig, bits: int, group: int, grid: tuple | None = None):
    """GPTQ's integers for a tied embedding table, chosen for its use as the LM head: the Hessian
    of the head's inputs (the final hidden states of the model as quantized so far) over the
    calibration texts; the head's 262k-way product itself is never computed. The lookups read the
    same rows. (packed codes, fp16 scales); with ``grid`` (a K-quant table's fixed (scale, offset)
    per sub-block of ``group``) the unpacked codes on that grid."""
    head = model.get_output_embeddings()
    batches = calibration_batches(tok, calibration_texts(cfg.calibration, cfg.samples, cfg.seed), cfg.seq_len)
    h = collect_stat({"head": head}, lambda x: x.t() @ x,
                     lambda: forward_until(model, batches, stop=head, before=True))["head"]
    w = model.get_input_embeddings().weight
    if grid is not None:
        return gptq_(w, h, bits, group, cfg.damp, act_order=cfg.act_order, grid=grid)
    q, s, _ = gptq_(w, h, bits, group, cfg.damp, symmetric=True, act_order=cfg.act_order, clip=cfg.clip_search)
    return q, s


RECOVERY_HELD = 8  # calibration texts set aside to measure recovery's KL before and after


def recover(model: nn.Module, teacher: nn.Module, tok, cfg: GPTQConfig) -> dict:
    """After the integers (layers and embedding): ``cfg.recover_steps`` of recovery
    (:mod:`medslm.methods.recover`) against ``teacher``, the dense model, on the calibration texts;
    its KL measured on :data:`RECOVERY_HELD` other texts of the same source."""
    from medslm.methods.recover import recover_

    texts = calibration_texts(cfg.calibration, cfg.samples + RECOVERY_HELD, cfg.seed)
    train, held = texts[:cfg.samples], texts[cfg.samples:]
    info = {"recovery_held_texts": len(held)}
    if not held:  # a source with no more texts than --samples: measured on training texts, said so
        held, info["recovery_held_texts"] = train[:RECOVERY_HELD], 0
    info |= recover_(model, teacher, calibration_batches(tok, train, cfg.seq_len),
                     calibration_batches(tok, held, cfg.seq_len), cfg.recover_steps, cfg.recover_lr,
                     cfg.recover_scale_lr, seed=cfg.seed)
    return info


def quantize_layers_(model: nn.Module, tok, cfg: GPTQConfig, names: list[str]) -> tuple[list[str], int]:
    """GPTQ's integers: (quantized module names, calibration tokens used)."""
    batches = calibration_batches(tok, calibration_texts(cfg.calibration, cfg.samples, cfg.seed), cfg.seq_len)
    tokens = sum(b.numel() for b in batches)
    if cfg.sequential:
        return gptq_sequential_(model, cfg, batches), tokens
    prefix = blocks_prefix(model) + "."
    # when every module lies in the blocks, the LM head's big matmul is not needed
    stop = decoder_layers(model)[-1] if all(n.startswith(prefix) for n in names) else None
    hessians = input_hessians(model, batches, {n: model.get_submodule(n) for n in names}, stop=stop)
    return quantize_(model, cfg, names=names, codes=_codes(cfg, hessians)), tokens


def gptq_sequential_(model: nn.Module, cfg: GPTQConfig, batches: list[torch.Tensor]) -> list[str]:
    """GPTQ block by block: block i's Hessians come from inputs that have passed through the already
    quantized blocks 0..i-1, so each block also corrects the error of the earlier ones.

    One pass over the dense model records what each block is called with (its keyword arguments:
    masks, rotary embeddings, which differ between Gemma's sliding and global layers) and the hidden
    states entering block 0; then each block runs alone on the hidden states the quantized blocks
    before it produced, twice (Hessians, then its quantized output), as GPTQ's reference code and
    llm-compressor's sequential pipeline do. Modules outside the blocks (rare: the LM head is skipped
    by default) are quantized last, from one pass over the whole quantized model."""
    from tqdm import tqdm

    sel = selected(model, cfg)
    layers = decoder_layers(model)
    prefix = blocks_prefix(model)
    calls = block_calls(model, layers, batches)
    hidden = [c[0][0] for c in calls[0]]
    done: list[str] = []
    for i in tqdm(range(len(layers)), desc="gptq: blocks", unit="block"):
        layer = layers[i]
        names = [n for n in sel if n.startswith(f"{prefix}.{i}.")]

        def run():
            outs = []
            with torch.no_grad():
                for h, (args, kwargs) in zip(hidden, calls[i]):
                    o = layer(h, *args[1:], **kwargs)
                    outs.append(o[0] if isinstance(o, tuple) else o)
            return outs

        if names:
            mods = {n: model.get_submodule(n) for n in names}
            h = collect_stat(mods, lambda x: x.t() @ x, run)
            done += quantize_(model, cfg, names=names, codes=_codes(cfg, h))
        if i + 1 < len(layers):  # the next block's inputs (the last block's outputs are not needed)
            hidden = run()
    rest = [n for n in sel if n not in done]
    if rest:
        h = input_hessians(model, batches, {n: model.get_submodule(n) for n in rest})
        done += quantize_(model, cfg, names=rest, codes=_codes(cfg, h))
    return done
