"""Weight-only round-to-nearest quantization: int8 or int4, symmetric, per output row in groups.

Each selected ``nn.Linear`` becomes a :class:`QuantLinear` that stores integer weights (int4 packed
two per byte) and one fp16 scale per group, and dequantizes one layer at a time in ``forward``;
so both bytes on disk and resident memory shrink. A layer filter keeps chosen modules (by default
``lm_head``, and embeddings, which are not Linear) in full precision.

Why not a library: torchao's int4 layouts need CUDA kernels and its tensor subclasses do not
serialize to safetensors; bitsandbytes' CPU path changes the numerics per version. This module is
small, deterministic on CPU and GPU, and its artifacts reload without extra packages. Speed on CPU
comes from GGUF on llama.cpp, not from PyTorch weight-only formats (measured 1.5-3x slower).
RTN: Dettmers et al. 2022 (https://arxiv.org/abs/2208.07339) give the per-group absmax baseline.

``algorithm: gptq`` (Frantar et al. 2022, https://arxiv.org/abs/2210.17323) keeps the same storage
(integers + per-group fp16 scales, so GPTQ artifacts load and run like RTN ones) but chooses the
integers column by column, spreading each column's rounding error over the columns not yet
quantized through the inverse Hessian X^T X of a calibration corpus (medical text by default). One
calibration pass over the dense model; written here (on calibration.py's Hessian hooks) because
llm-compressor pins another transformers and its output needs compressed-tensors to load.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

import torch
from pydantic import field_validator, model_validator
from torch import nn

from medslm.methods.base import CalibratedConfig, Transformed, load_dense
from medslm.methods.calibration import (block_calls, calibration_batches, calibration_texts, collect_stat,
                                        hessian_factor, input_hessians)
from medslm.models.anatomy import blocks_prefix, decoder_layers, is_linear, linear_weight, set_submodule
from medslm.models.quantized import QuantEmbedding, QuantLinear, QuantTiedHead, pack_codes, save_state


class QuantizeConfig(CalibratedConfig):  # calibration fields are used by gptq only
    method: Literal["quantize"] = "quantize"
    bits: Literal[4, 8] = 8
    group_size: int = 128
    # fnmatch patterns of module names kept in full precision; "lm_head" means the output layer
    # whatever its name (a head tied to the embeddings is always kept)
    skip: tuple[str, ...] = ("lm_head",)
    # "int8": also store the input embedding as int8 rows (and a tied LM head computed from it,
    # vocabulary chunk by chunk); for Gemma 3 270M the embedding is 63% of the weights
    embeddings: Literal["keep", "int8"] = "keep"
    algorithm: Literal["rtn", "gptq"] = "rtn"
    # false: unsigned integers with a zero point per group (min-max range, as GPTQ's and llama.cpp's
    # Q4_K "min" formats); better for 4-bit at the cost of one byte per group
    symmetric: bool = True
    # search each group's range for the least squared rounding error (clipping outliers)
    clip_search: bool = False
    # fnmatch patterns of modules quantized to 8 bits when bits=4: mixed precision for the layers
    # most sensitive to rounding, as llama.cpp's Q4_K_M keeps attn_v and ffn_down at 6 bits
    # (e.g. ("*.v_proj", "*.down_proj"))
    bits8: tuple[str, ...] = ()
    # gptq only: quantize columns in order of decreasing Hessian diagonal (the "act-order" /
    # desc_act heuristic), with group scales fixed from the original weights ("static groups"),
    # so the stored format is unchanged
    act_order: bool = False
    # gptq only: quantize block by block, each block's Hessians measured on the outputs of the
    # blocks already quantized (the paper's sequential scheme); false: one pass on the dense model
    sequential: bool = False

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 8 or v & (v - 1):
            raise ValueError(f"group_size={v}: must be a power of two >= 8 (e.g. 32, 64, 128)")
        return v

    @model_validator(mode="after")
    def _gptq_only(self):
        for f in ("act_order", "sequential"):
            if getattr(self, f) and self.algorithm != "gptq":
                raise ValueError(f"{f}=True applies to algorithm='gptq', not {self.algorithm!r}")
        return self


def _qparams(g: torch.Tensor, bits: int, symmetric: bool,
             clip: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (fp16-representable) and zero point (integer, asymmetric only) of the rows of ``g``
    over its last dimension. ``clip``: shrink each range by the factor in 1.0 .. 0.75 that gives the
    least squared rounding error (outliers clipped when that helps the rest; the grid search of
    llama.cpp's k-quants and AWQ's clipping)."""
    best = None
    for shrink in (_SHRINKS if clip else (1.0,)):
        if symmetric:
            qmax = 2 ** (bits - 1) - 1  # 127 or 7
            s, z = (g.abs().amax(-1) * shrink / qmax).clamp(min=1e-8).half().float(), None
        else:
            levels = 2 ** bits - 1  # 255 or 15
            lo, hi = g.amin(-1).clamp(max=0) * shrink, g.amax(-1).clamp(min=0) * shrink  # 0 exact
            s = ((hi - lo) / levels).clamp(min=1e-8).half().float()
            z = torch.round(-lo / s).clamp(0, levels)
        if not clip:
            return s, z
        s1, z1 = s[..., None], None if z is None else z[..., None]
        err = ((_dequant(_round(g, s1, z1, bits), s1, z1) - g) ** 2).sum(-1)
        if best is None:
            best = (err, s, z)
        else:
            better = err < best[0]
            best = (torch.where(better, err, best[0]), torch.where(better, s, best[1]),
                    None if z is None else torch.where(better, z, best[2]))
    return best[1], best[2]


_SHRINKS = tuple(1.0 - 0.0125 * i for i in range(21))  # 1.0 down to 0.75


def _dequant(q: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    return q * s if z is None else (q - z) * s


def _round(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, bits: int) -> torch.Tensor:
    """Integer codes of ``w`` for scale ``s`` (and zero point ``z``), broadcast over rows."""
    if z is None:
        qmax = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w / s), -qmax - 1, qmax)
    return torch.clamp(torch.round(w / s) + z, 0, 2 ** bits - 1)


def gptq_(w: torch.Tensor, H: torch.Tensor, bits: int, group: int, damp: float = 0.01,
          blocksize: int = 128, symmetric: bool = True, act_order: bool = False, clip: bool = False):
    """GPTQ integers (out, in), fp16 group scales and (asymmetric) uint8 zero points for ``w``
    given the input Hessian ``H``.

    With ``act_order`` the columns are visited by decreasing Hessian diagonal; a group's scale is then
    fixed beforehand from the original weights (static groups) so that groups stay contiguous in
    the original column order and the storage is the same as without it.
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
    if act_order:  # static groups, from the original (dead inputs zeroed) weights
        Wg = torch.empty_like(W)
        Wg[:, perm] = W
        s_all, z_all = _qparams(Wg.reshape(rows, cols // group, group), bits, symmetric, clip)
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
            if act_order:
                g = int(perm[c]) // group
                s, z = scales[:, g], None if zeros is None else zeros[:, g]
            elif c % group == 0:  # the group's scale from its (error-updated) weights
                s, z = _qparams(W1[:, i:i + group], bits, symmetric, clip)
                scales[:, c // group] = s
                if zeros is not None:
                    zeros[:, c // group] = z
            col = W1[:, i]
            q = _round(col, s, z, bits)
            Q[:, c] = q
            err = (col - _dequant(q, s, z)) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    Qo = torch.empty_like(Q)
    Qo[:, perm] = Q
    return (pack_codes(Qo, bits, symmetric), scales.to(torch.float16),
            None if zeros is None else zeros.to(torch.uint8))


def _quantize(w: torch.Tensor, bits: int, group: int, symmetric: bool = True, clip: bool = False):
    out_f, in_f = w.shape
    g = w.float().reshape(out_f, in_f // group, group)
    s, z = _qparams(g, bits, symmetric, clip)
    q = _round(g, s[..., None], None if z is None else z[..., None], bits).reshape(out_f, in_f)
    return (pack_codes(q, bits, symmetric), s.to(torch.float16),
            None if z is None else z.to(torch.uint8))


def quantize_linear(lin: nn.Module, bits: int, group_size: int, hessian: torch.Tensor | None = None,
                    damp: float = 0.01, symmetric: bool = True, act_order: bool = False,
                    clip: bool = False) -> QuantLinear:
    """A QuantLinear of ``lin``: RTN, or GPTQ when the input ``hessian`` is given."""
    w = linear_weight(lin)
    q, sc, z = (_quantize(w, bits, group_size, symmetric, clip) if hessian is None
                else gptq_(w, hessian, bits, group_size, damp, symmetric=symmetric, act_order=act_order,
                           clip=clip))
    return QuantLinear.from_codes(q, sc, z, bits, group_size, w.shape[1], lin.bias)


def quantize_embeddings_(model: nn.Module) -> int:
    """In place: int8 input embedding, and a tied LM head reading it. Returns quantized weights."""
    from medslm.errors import MedslmError

    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False) and head is not None and \
        head.weight.data_ptr() == emb.weight.data_ptr()
    if not tied:
        raise MedslmError("embeddings=int8 needs an LM head tied to the embeddings (Gemma, GPT-2); "
                          "this model's head is separate: use embeddings=keep")
    q = QuantEmbedding.from_embedding(emb)
    model.set_input_embeddings(q)
    model.set_output_embeddings(QuantTiedHead(q))
    return q.n_quantized


def selected(model: nn.Module, cfg: QuantizeConfig) -> list[str]:
    names = []
    head = model.get_output_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    for name, mod in model.named_modules():
        if mod is head and (tied or "lm_head" in cfg.skip):  # the LM head, whatever its name
            continue
        if is_linear(mod) and not any(fnmatch.fnmatch(name, p) for p in cfg.skip):
            if linear_weight(mod).shape[1] % cfg.group_size == 0:
                names.append(name)
    return names


def quantize_(model: nn.Module, cfg: QuantizeConfig, names: list[str] | None = None,
              hessians: dict[str, torch.Tensor] | None = None) -> list[str]:
    """In place (hence the ``_``): replace the selected Linear layers with QuantLinear."""
    names = selected(model, cfg) if names is None else names
    for n in names:
        h = hessians.pop(n, None) if hessians is not None else None
        with torch.no_grad():
            set_submodule(model, n, quantize_linear(model.get_submodule(n), bits_of(n, cfg), cfg.group_size,
                                                      hessian=h, damp=cfg.damp, symmetric=cfg.symmetric,
                                                      act_order=cfg.act_order, clip=cfg.clip_search))
    return names


def bits_of(name: str, cfg: QuantizeConfig) -> int:
    return 8 if cfg.bits == 4 and any(fnmatch.fnmatch(name, p) for p in cfg.bits8) else cfg.bits


def apply(art, cfg: QuantizeConfig) -> Transformed:
    from medslm.errors import MedslmError

    model, tok = load_dense(art, "quantize")
    sel = selected(model, cfg)
    if not sel:  # checked before any calibration work
        raise MedslmError(f"quantize: no Linear layer matched (skip={list(cfg.skip)}, group_size="
                          f"{cfg.group_size} must divide the input features)")
    eight = [n for n in sel if bits_of(n, cfg) != cfg.bits]
    if cfg.bits8 and not eight:
        raise MedslmError(f"quantize: bits8={list(cfg.bits8)} matched no quantized module (bits={cfg.bits}; "
                          "patterns match module names such as model.layers.0.mlp.down_proj)")
    calib_tokens = 0
    if cfg.algorithm == "gptq":
        batches = calibration_batches(tok, calibration_texts(cfg.calibration, cfg.samples, cfg.seed),
                                      cfg.seq_len)
        calib_tokens = sum(b.numel() for b in batches)
        if cfg.sequential:
            names = gptq_sequential_(model, cfg, batches)
        else:
            prefix = blocks_prefix(model) + "."
            # when every module lies in the blocks, the LM head's big matmul is not needed
            stop = decoder_layers(model)[-1] if all(n.startswith(prefix) for n in sel) else None
            hessians = input_hessians(model, batches, {n: model.get_submodule(n) for n in sel}, stop=stop)
            names = quantize_(model, cfg, names=sel, hessians=hessians)
    else:
        names = quantize_(model, cfg, names=sel)
    if cfg.embeddings == "int8":
        quantize_embeddings_(model)
    qn = sum(getattr(m, "n_quantized", 0) for m in model.modules())
    total = sum(p.numel() for p in model.parameters()) + qn
    q = {"scheme": f"int{cfg.bits}-{cfg.algorithm}-g{cfg.group_size}" + ("" if cfg.symmetric else "-asym")
         + ("+emb-int8" if cfg.embeddings == "int8" else ""),
         "bits": cfg.bits, "group_size": cfg.group_size, "symmetric": cfg.symmetric, "modules": names,
         "embeddings": cfg.embeddings}
    if eight:
        q["modules_8bit"] = eight
        q["scheme"] += f"+{len(eight)}x8bit"
    return Transformed(model, tok, info={"quantized_layers": len(names),
                                         "quantized_fraction": round(qn / total, 4),
                                         "calibration_tokens": calib_tokens},
                       extra={"quantization": q}, write=lambda tmp: save_state(model, tmp))


def gptq_sequential_(model: nn.Module, cfg: QuantizeConfig, batches: list[torch.Tensor]) -> list[str]:
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
            done += quantize_(model, cfg, names=names, hessians=h)
        if i + 1 < len(layers):  # the next block's inputs (the last block's outputs are not needed)
            hidden = run()
    rest = [n for n in sel if n not in done]
    if rest:
        h = input_hessians(model, batches, {n: model.get_submodule(n) for n in rest})
        done += quantize_(model, cfg, names=rest, hessians=h)
    return done


