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

This module is the ``quantize`` family: the storage it writes, the layer selection, mixed precision
and int8 embeddings are shared by every algorithm, whose module only chooses the integers
(``quantize_layers_``); RTN is here, GPTQ in :mod:`medslm.methods.gptq`.
"""

from __future__ import annotations

import copy
import fnmatch
import sys
from typing import Callable, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from medslm.errors import MedslmError
from medslm.methods.base import MethodConfig, Transformed, load_dense, register_method
from medslm.methods.grids import qparams, round_codes
from medslm.models.anatomy import is_linear, linear_weight, set_submodule
from medslm.models.quantized import QuantEmbedding, QuantLinear, QuantTiedHead, pack_codes, save_state


@register_method("quantize", "rtn", default=True)
class QuantizeConfig(MethodConfig):
    """Weight-only round-to-nearest quantization (the family's shared fields)."""

    method: Literal["quantize"] = "quantize"
    algorithm: Literal["rtn"] = Field("rtn", description="rtn (default) or gptq (calibrated; --calibration, --samples)")
    bits: Literal[4, 8] = Field(8, description="4 or 8")
    group_size: int = Field(32, description="weights per scale (a power of two >= 8); 32 is a GGUF block, so "
                            "the integers export to llama.cpp as they are")
    skip: tuple[str, ...] = Field(("lm_head",), description="comma-separated module patterns kept in full "
                                  "precision; lm_head means the output layer whatever its name (a head tied "
                                  "to the embeddings is always kept; with --target q4_k_m the default is "
                                  "none: an untied head gets llama.cpp's output type, Q6_K, or Q8_0 where "
                                  "its width is not a multiple of 256)")
    embeddings: Literal["auto", "keep", "int8", "int5", "int4", "q6_k", "q4_k"] = Field(
        "auto", description="the input embedding (and a tied LM head read from it): int8, int5 or int4 in "
        "blocks of 32 (GGUF's Q8_0/Q5_0/Q4_0), q6_k or q4_k (llama.cpp's super-blocks; rows a multiple of "
        "256 wide), or keep (float); auto: with --target q4_k_m what llama.cpp's Q4_K_M gives the table "
        "(tied: q6_k, or int8 where the width is not a multiple of 256; untied: q4_k, or int5); otherwise "
        "int8 when the head is tied to it (Gemma 3 270M's embedding is 63% of its weights), else keep")
    symmetric: bool = Field(True, description="signed integers; --asymmetric: unsigned with a zero point per "
                            "group (min-max range, as GPTQ's and llama.cpp's Q4_K 'min' formats)",
                            json_schema_extra={"flag": "--asymmetric"})
    clip_search: bool = Field(False, description="search each group's range for the least squared rounding "
                              "error (clipping outliers)")
    bits8: tuple[str, ...] = Field((), description="with --bits 4: comma-separated module patterns kept at 8 "
                                   "bits (mixed precision, as llama.cpp's Q4_K_M keeps attn_v and ffn_down at "
                                   "6), e.g. '*.v_proj,*.down_proj'")

    target: Literal["medslm", "gguf", "q4_k_m"] = Field(
        "medslm", description="gguf: integers chosen on the grid a GGUF block stores (groups of 32; fp16 "
        "scales and, with --asymmetric, Q4_1's fp16 offsets; 8-bit layers symmetric as Q8_0), so `medslm "
        "export` writes them as Q4_0/Q4_1/Q8_0 blocks exactly; q4_k_m (with --bits 4): each layer on the "
        "type llama.cpp's Q4_K_M gives it (Q4_K, Q6_K, or Q5_0/Q8_0 for rows not a multiple of 256), "
        "integers chosen on that grid: the same tensor types and bytes as llama.cpp's own Q4_K_M")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 8 or v & (v - 1):
            raise ValueError(f"group_size={v}: must be a power of two >= 8 (e.g. 32, 64, 128)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _q4_k_m_head(cls, data):
        """target q4_k_m quantizes an untied LM head by llama.cpp's output rule unless --skip is given."""
        if isinstance(data, dict) and data.get("target") == "q4_k_m" and "skip" not in data:
            data = {**data, "skip": ()}
        return data

    @model_validator(mode="after")
    def _gguf_grid(self):
        if self.target == "q4_k_m":
            if self.bits != 4 or self.group_size != GGUF_BLOCK or not self.symmetric or self.bits8:
                raise ValueError("target=q4_k_m takes its per-layer types from llama.cpp's Q4_K_M rule: use it "
                                 "with bits=4 and without --group-size, --asymmetric or --bits8 (Q4_K has its "
                                 "own mins; Q6_K/Q8_0 are its more-bits layers)")
        if self.target == "gguf":
            if self.group_size != GGUF_BLOCK:
                raise ValueError(f"group_size={self.group_size} with target=gguf: GGUF's Q4_0, Q4_1 and Q8_0 "
                                 f"blocks hold {GGUF_BLOCK} weights; use group_size {GGUF_BLOCK} (or drop it)")
            if self.bits == 8 and not self.symmetric:
                raise ValueError("bits=8 with symmetric=false and target=gguf: GGUF's 8-bit block (Q8_0) is "
                                 "symmetric; drop --asymmetric, or use --bits 4 (Q4_1 has offsets)")
        return self

    def layer_format(self, bits: int) -> tuple[bool, bool]:
        """(symmetric, fp16 offsets) of a layer quantized at ``bits``."""
        gguf = self.target == "gguf"
        return self.symmetric or (gguf and bits == 8), gguf and not self.symmetric and bits != 8

    def layer_types(self, model: nn.Module, names: list[str]) -> dict[str, str]:
        """target q4_k_m: {module: GGUF type} by llama.cpp's Q4_K_M rule; otherwise {}."""
        if self.target != "q4_k_m":
            return {}
        from medslm.methods.kquant import q4_k_m_types
        return q4_k_m_types(model, names)


GGUF_BLOCK = 32  # weights per Q4_0 / Q4_1 / Q8_0 block
KIND_BITS = {"q4_k": 4, "q5_0": 5, "q6_k": 6, "q8_0": 8}  # target q4_k_m: a layer's bits by its type


def rtn_codes(w: torch.Tensor, bits: int, group: int, symmetric: bool = True, clip: bool = False,
              fp16_min: bool = False):
    """Packed integer codes, fp16 scales and (asymmetric) uint8 zero points of ``w`` (out, in)."""
    out_f, in_f = w.shape
    g = w.float().reshape(out_f, in_f // group, group)
    s, z = qparams(g, bits, symmetric, clip, fp16_min)
    q = round_codes(g, s[..., None], None if z is None else z[..., None], bits, fp16_min).reshape(out_f, in_f)
    return (pack_codes(q, bits, symmetric), s.to(torch.float16),
            None if z is None else z.to(torch.uint8))


Codes = Callable[[str, torch.Tensor, int], tuple]  # (module name, weight, bits) -> (q, scales, zeros)


def quantize_linear(lin: nn.Module, bits: int, group_size: int, symmetric: bool = True,
                    clip: bool = False) -> QuantLinear:
    """A QuantLinear of ``lin`` by round-to-nearest."""
    w = linear_weight(lin)
    return QuantLinear.from_codes(*rtn_codes(w, bits, group_size, symmetric, clip), bits, group_size,
                                  w.shape[1], lin.bias)


def head_tied(model: nn.Module) -> bool:
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    return bool(getattr(model.config, "tie_word_embeddings", False)) and head is not None and \
        isinstance(emb, nn.Embedding) and getattr(head, "weight", None) is not None and \
        head.weight.data_ptr() == emb.weight.data_ptr()


def embedding_group(dim: int) -> int:
    """Weights per embedding scale: a GGUF block (32) where the row divides into them, else the row."""
    return GGUF_BLOCK if dim % GGUF_BLOCK == 0 else dim


def quantize_embeddings_(model: nn.Module, kind: str = "int8", clip: bool = False,
                         codes: Callable[[int, int], tuple] | None = None) -> int:
    """In place: the input embedding as ``kind`` (``int8``/``int5``/``int4``: symmetric codes in
    groups of 32, each a GGUF Q8_0/Q5_0/Q4_0 block; ``q6_k``/``q4_k``: llama.cpp's super-blocks, the
    grid by kquant's least-squares search and the integers rounded on it, as llama.cpp's own), and a
    tied LM head reading it. ``codes(bits, group)`` chooses the 8/5/4-bit integers (default: round
    to nearest); for a K-quant table ``codes(bits, group, grid=(scale, offset))`` the integers on
    its fixed grid. Returns the quantized weights."""
    tied = head_tied(model)
    emb = model.get_input_embeddings()
    group = embedding_group(emb.embedding_dim)
    with torch.no_grad():
        if kind in ("q6_k", "q4_k"):
            from medslm.methods.kquant import kquant_layer
            from medslm.models.quantized import KQuantEmbedding

            own = None if codes is None else (lambda w_, s, m, b, g: codes(b, g, grid=(s, m)))
            qe = KQuantEmbedding.from_layer(emb, kquant_layer(emb.weight.data, kind, None, own))
        else:
            bits = int(kind[3:])
            if codes is not None:
                q, s = codes(bits, group)
            else:
                q, s, _ = rtn_codes(emb.weight.data, bits, group, symmetric=True, clip=clip)
            qe = QuantEmbedding.from_codes(emb, q, s, bits, group)
    model.set_input_embeddings(qe)
    if tied:
        model.set_output_embeddings(QuantTiedHead(qe))
    return qe.n_quantized


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
              codes: Codes | None = None) -> list[str]:
    """In place (hence the ``_``): replace the selected Linear layers with QuantLinear; ``codes``
    chooses each layer's integers (default: round to nearest)."""
    names = selected(model, cfg) if names is None else names
    kinds = cfg.layer_types(model, names)
    for n in names:
        lin = model.get_submodule(n)
        w, bits = linear_weight(lin), KIND_BITS.get(kinds.get(n), bits_of(n, cfg))
        sym, fp16_min = cfg.layer_format(bits)
        with torch.no_grad():
            if kinds.get(n) in ("q4_k", "q6_k"):  # a K-quant grid, fixed first; then its integers
                from medslm.methods.kquant import kquant_layer
                own = None if codes is None else (lambda w_, s, m, b, g, n=n: codes(n, w_, b, grid=(s, m, g)))
                set_submodule(model, n, kquant_layer(w, kinds[n], lin.bias, own))
                continue
            q, s, z = (codes(n, w, bits) if codes is not None
                       else rtn_codes(w, bits, cfg.group_size, sym, cfg.clip_search, fp16_min))
            set_submodule(model, n, QuantLinear.from_codes(q, s, z, bits, cfg.group_size, w.shape[1], lin.bias,
                                                           fp16_min))
    return names


def quantize_layers_(model: nn.Module, tok, cfg: QuantizeConfig, names: list[str]) -> tuple[list[str], int]:
    """RTN's integers: (quantized module names, calibration tokens used)."""
    return quantize_(model, cfg, names=names), 0


def bits_of(name: str, cfg: QuantizeConfig) -> int:
    return 8 if cfg.bits == 4 and any(fnmatch.fnmatch(name, p) for p in cfg.bits8) else cfg.bits


def apply(art, cfg: QuantizeConfig) -> Transformed:
    """The family's handler: select, check, choose integers by the config's algorithm, write."""
    model, tok = load_dense(art, "quantize")
    sel = selected(model, cfg)
    if not sel:  # checked before any calibration work
        raise MedslmError(f"quantize: no Linear layer matched (skip={list(cfg.skip)}, group_size="
                          f"{cfg.group_size} must divide the input features)")
    eight = [n for n in sel if bits_of(n, cfg) != cfg.bits]
    if cfg.bits8 and not eight:
        raise MedslmError(f"quantize: bits8={list(cfg.bits8)} matched no quantized module (bits={cfg.bits}; "
                          "patterns match module names such as model.layers.0.mlp.down_proj)")
    embeddings, tied = cfg.embeddings, head_tied(model)
    width = model.get_input_embeddings().embedding_dim
    if embeddings == "auto":
        if cfg.target == "q4_k_m":  # the type llama.cpp's Q4_K_M gives the table
            from medslm.methods.kquant import table_type
            embeddings = table_type(width, tied)
        else:
            embeddings = "int8" if tied else "keep"
    if embeddings in ("q6_k", "q4_k") and width % 256:  # refused before any calibration work
        fallback = "int8 (Q8_0" if embeddings == "q6_k" else "int5 (Q5_0"
        raise MedslmError(f"embeddings={embeddings}: the embedding width {width} is not a multiple of 256 "
                          f"({embeddings.upper()}'s super-block); use embeddings={fallback}, llama.cpp's "
                          "fallback there) or keep")
    if cfg.target != "medslm" and embeddings != "keep" and width % GGUF_BLOCK:
        raise MedslmError(f"target={cfg.target}: the embedding width {width} is not a multiple of "
                          f"{GGUF_BLOCK}, so it cannot be GGUF blocks; use embeddings=keep")
    # the algorithm's own choice of integers (its module's quantize_layers_); RTN's is here
    algo = sys.modules[type(cfg).__module__]
    # recovery (GPTQ's recover_steps) distills from the dense model after the integers are chosen
    teacher = copy.deepcopy(model) if getattr(cfg, "recover_steps", 0) else None
    names, calib_tokens = algo.quantize_layers_(model, tok, cfg, sel)
    emb_group = None
    if embeddings != "keep":  # the algorithm's own integers for a tied table where it has them (GPTQ,
        # chosen for the table's use as the LM head; an untied input table is only looked up: RTN)
        own = getattr(algo, "embedding_codes", None) if tied else None
        table = None if own is None else (lambda bits, group, grid=None: own(model, tok, cfg, bits, group, grid))
        quantize_embeddings_(model, embeddings, cfg.clip_search, table)
        emb_group = model.get_input_embeddings().group
    recovered = {} if teacher is None else algo.recover(model, teacher, tok, cfg)
    del teacher
    qn = sum(getattr(m, "n_quantized", 0) for m in model.modules())
    total = sum(p.numel() for p in model.parameters()) + qn
    q = {"scheme": f"int{cfg.bits}-{cfg.algorithm}-g{cfg.group_size}" + ("" if cfg.symmetric else "-asym")
         + ("" if embeddings == "keep" else f"+emb-{embeddings}") + ("+gguf" if cfg.target == "gguf" else ""),
         "bits": cfg.bits, "group_size": cfg.group_size, "symmetric": cfg.symmetric, "modules": names,
         "embeddings": embeddings, "target": cfg.target}
    if cfg.target == "q4_k_m":
        q["module_types"] = cfg.layer_types(model, names)
        q["scheme"] = f"q4_k_m-{cfg.algorithm}" + ("" if embeddings == "keep" else f"+emb-{embeddings}")
    if emb_group is not None:
        q["embedding_group_size"] = emb_group
        q["embedding_tied"] = tied
    if recovered:
        q["recovery"] = {"steps": cfg.recover_steps, "lr": cfg.recover_lr, "scale_lr": cfg.recover_scale_lr}
        q["scheme"] += f"+rec{cfg.recover_steps}"
    if eight:
        q["modules_8bit"] = eight
        q["scheme"] += f"+{len(eight)}x8bit"
    return Transformed(model, tok, info={"quantized_layers": len(names),
                                         "quantized_fraction": round(qn / total, 4),
                                         "calibration_tokens": calib_tokens, **recovered},
                       extra={"quantization": q}, write=lambda tmp: save_state(model, tmp))
