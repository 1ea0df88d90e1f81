"""medslm's quantized storage format: integer weights with per-group fp16 scales (and uint8 zero
points when asymmetric) as ``nn.Module`` layers, how an artifact records them, and how they are
saved and rebuilt for loading.

The format sits in ``models/`` because ``models`` loads it, ``methods`` (quantize) writes it and
``export`` reads it; the algorithms that choose the integers (RTN, GPTQ, clip search) are methods.

- ``QuantLinear``: ``qweight`` (int4 packed two per byte, low nibble first; or int8/uint8),
  ``scales`` (out, in/group) fp16, ``zeros`` (out, in/group) uint8 when asymmetric:
  ``w = (q - zero) * scale`` (symmetric: ``w = q * scale``, int4 codes stored offset by 8). On the
  GGUF grid (``fp16_min``) the offset is the one a Q4_1 block stores, ``-scale * zero`` rounded to
  fp16: ``w = q * scale + fp16(-scale * zero)``.
- ``QuantEmbedding``: int8, int5 or int4 rows with fp16 scales per group of the row (32: a
  Q8_0/Q5_0/Q4_0 block), or, in artifacts written before groups, int8 with one scale per row;
  ``KQuantEmbedding`` the same on a Q6_K or Q4_K grid; ``QuantTiedHead`` computes a tied LM head
  from it (dequantized once, on first use).
- An artifact's ``medslm.json`` ``extra.quantization`` lists the modules (``modules``,
  ``modules_8bit``), ``bits``, ``group_size``, ``symmetric``, ``target`` (``gguf``: scales and
  offsets as a GGUF block stores them; 8-bit modules then symmetric, as Q8_0; ``q4_k_m``: each
  module on the GGUF type llama.cpp's Q4_K_M gives it, listed in ``module_types``) and ``embeddings``
  (``keep``, ``int8``, ``int5``, ``int4``, ``q6_k``, ``q4_k``) with ``embedding_group_size`` and
  ``embedding_tied`` (false: an untied input table alone; absent in older artifacts, whose quantized
  tables were all tied).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medslm.models.anatomy import linear_weight, set_submodule


def pack_codes(q: torch.Tensor, bits: int, symmetric: bool = True) -> torch.Tensor:
    """int4: two nibbles per byte (signed ones offset by 8); 5- and 8-bit: one int8 (signed) or uint8
    code per byte."""
    if bits == 4:
        u = (q + 8 if symmetric else q).to(torch.uint8)
        return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous()
    return q.to(torch.int8 if symmetric else torch.uint8)


class QuantLinear(nn.Module):
    """A Linear with integer weights and per-group fp16 scales; dequantized per forward call."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int, group_size: int,
                 symmetric: bool = True, fp16_min: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        self.fp16_min = fp16_min and not symmetric
        cols = in_features // 2 if bits == 4 else in_features
        dtype = torch.int8 if bits != 4 and symmetric else torch.uint8  # 5/8-bit: one code a byte
        self.register_buffer("qweight", torch.zeros(out_features, cols, dtype=dtype))
        self.register_buffer("scales", torch.zeros(out_features, in_features // group_size,
                                                   dtype=torch.float16))
        if not symmetric:  # integer zero point per group: w = (q - zero) * scale
            self.register_buffer("zeros", torch.zeros(out_features, in_features // group_size,
                                                      dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.n_quantized = in_features * out_features

    @classmethod
    def from_codes(cls, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                   bits: int, group_size: int, in_features: int, bias: torch.Tensor | None = None,
                   fp16_min: bool = False) -> "QuantLinear":
        """A layer holding packed codes ``qweight``, fp16 ``scales`` and (asymmetric) ``zeros``."""
        m = cls(in_features, qweight.shape[0], bias is not None, bits, group_size, zeros is None, fp16_min)
        m.qweight, m.scales = qweight, scales
        if zeros is not None:
            m.zeros = zeros
        if bias is not None:
            m.bias = nn.Parameter(bias.detach().float().clone())
        return m

    def dequantize(self) -> torch.Tensor:
        q = unpack_codes(self.qweight, self.bits, self.in_features, self.symmetric)
        g = q.float().reshape(self.out_features, -1, self.group_size)
        s = self.scales.float()[..., None]
        if self.fp16_min:
            return (g * s + offset(self.scales, self.zeros)[..., None]).reshape(self.out_features, self.in_features)
        if not self.symmetric:
            g = g - self.zeros.float()[..., None]
        return (g * s).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantize().to(x.dtype)
        return nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}"
                + ("" if self.symmetric else ", asymmetric") + (", fp16 min" if self.fp16_min else ""))


class KQuantLinear(nn.Module):
    """A Linear on one of llama.cpp's K-quant grids, stored as the GGUF block holds it, so the
    export writes these numbers byte for byte and llama.cpp computes exactly ``dequantize()``:

    - ``q4_k``: super-blocks of 256 weights with an fp16 ``d`` and ``dmin``; eight sub-blocks of 32,
      each with a 6-bit scale ``sc`` and min ``mn`` (0..63); codes 0..15:
      ``w = (d * sc) * q - (dmin * mn)``;
    - ``q6_k``: super-blocks of 256 with an fp16 ``d``; sixteen sub-blocks of 16 with an int8 scale;
      codes -32..31: ``w = (d * sc) * q``.

    The products are float32 in ggml's order (``gguf``'s dequantizer reads them so). Codes are kept
    one per int8 (medslm's artifact is the working form; the GGUF is the shipped one)."""

    SUB = {"q4_k": 32, "q6_k": 16}

    def __init__(self, in_features: int, out_features: int, bias: bool, kind: str):
        super().__init__()
        self.in_features, self.out_features, self.kind = in_features, out_features, kind
        self.bits, self.group_size = (4 if kind == "q4_k" else 6), self.SUB[kind]
        sb, sub = in_features // 256, in_features // self.SUB[kind]
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("d", torch.zeros(out_features, sb, dtype=torch.float16))
        self.register_buffer("sc", torch.zeros(out_features, sub, dtype=torch.uint8 if kind == "q4_k" else torch.int8))
        if kind == "q4_k":
            self.register_buffer("dmin", torch.zeros(out_features, sb, dtype=torch.float16))
            self.register_buffer("mn", torch.zeros(out_features, sub, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.n_quantized = in_features * out_features

    def grid(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scale, offset or None) per sub-block, float32: ``w = scale * q + offset``."""
        per = 256 // self.group_size
        s = self.d.float().repeat_interleave(per, -1) * self.sc.float()
        if self.kind != "q4_k":
            return s, None
        return s, -(self.dmin.float().repeat_interleave(per, -1) * self.mn.float())

    def dequantize(self) -> torch.Tensor:
        s, m = self.grid()
        q = self.qweight.float().reshape(self.out_features, -1, self.group_size)
        w = s[..., None] * q if m is None else s[..., None] * q + m[..., None]
        return w.reshape(self.out_features, self.in_features)

    forward = QuantLinear.forward

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.kind}"


def offset(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The per-group offset a GGUF Q4_1 block stores: ``-scale * zero`` rounded to fp16, as float."""
    return (-scales.float() * zeros.float()).half().float()


def unpack_codes(q: torch.Tensor, bits: int, cols: int, symmetric: bool = True) -> torch.Tensor:
    """The integer codes (rows, cols) of packed ``q`` (the inverse of :func:`pack_codes`)."""
    if bits != 4:
        return q.to(torch.int16)
    off = 8 if symmetric else 0
    lo = (q & 0x0F).to(torch.int16) - off
    hi = (q >> 4).to(torch.int16) - off
    return torch.stack([lo, hi], -1).reshape(q.shape[0], cols)


class QuantEmbedding(nn.Module):
    """An embedding table stored as symmetric int8 or int4 codes with fp16 scales per group of each
    row (``group`` None: one scale per row, int8 only, as artifacts before groups stored it)."""

    def __init__(self, num: int, dim: int, embed_scale: float | None = None, bits: int = 8,
                 group: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num, dim
        self.bits, self.group = bits, group
        cols = dim // 2 if bits == 4 else dim
        self.register_buffer("qweight", torch.zeros(num, cols, dtype=torch.uint8 if bits == 4 else torch.int8))
        self.register_buffer("scales", torch.zeros((num,) if group is None else (num, dim // group),
                                                   dtype=torch.float16))
        self.embed_scale = embed_scale  # Gemma multiplies embeddings by sqrt(hidden)
        self.n_quantized = num * dim

    @classmethod
    def from_codes(cls, emb: nn.Embedding, qweight: torch.Tensor, scales: torch.Tensor, bits: int,
                   group: int) -> "QuantEmbedding":
        """The quantized table of ``emb`` from packed symmetric codes and (num, dim/group) scales."""
        scale = getattr(emb, "embed_scale", None)
        m = cls(emb.num_embeddings, emb.embedding_dim, None if scale is None else float(scale), bits, group)
        m.qweight, m.scales = qweight, scales
        return m

    def rows(self, idx: slice | torch.Tensor) -> torch.Tensor:
        if self.group is None:
            return self.qweight[idx].float() * self.scales[idx].float()[..., None]
        q, s = self.qweight[idx], self.scales[idx]
        lead = q.shape[:-1]
        q = unpack_codes(q.reshape(-1, q.shape[-1]), self.bits, self.embedding_dim).float()
        w = q.reshape(-1, self.embedding_dim // self.group, self.group) * s.reshape(-1, s.shape[-1]).float()[..., None]
        return w.reshape(*lead, self.embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.rows(ids)
        return x * self.embed_scale if self.embed_scale is not None else x


class KQuantEmbedding(QuantEmbedding):
    """An embedding table on one of llama.cpp's K-quant grids (rows a multiple of 256 wide), stored as
    :class:`KQuantLinear` stores it, so the export writes it byte for byte: ``q6_k`` is what llama.cpp's
    Q4_K_M makes of a tied table of such a width (its output rule), ``q4_k`` what it makes of an
    untied input embedding (its default type)."""

    def __init__(self, num: int, dim: int, embed_scale: float | None = None, kind: str = "q6_k"):
        nn.Module.__init__(self)
        self.num_embeddings, self.embedding_dim, self.kind = num, dim, kind
        self.bits, self.group = (4 if kind == "q4_k" else 6), KQuantLinear.SUB[kind]
        self.register_buffer("qweight", torch.zeros(num, dim, dtype=torch.int8))
        self.register_buffer("d", torch.zeros(num, dim // 256, dtype=torch.float16))
        self.register_buffer("sc", torch.zeros(num, dim // self.group,
                                               dtype=torch.uint8 if kind == "q4_k" else torch.int8))
        if kind == "q4_k":
            self.register_buffer("dmin", torch.zeros(num, dim // 256, dtype=torch.float16))
            self.register_buffer("mn", torch.zeros(num, dim // self.group, dtype=torch.uint8))
        self.embed_scale = embed_scale
        self.n_quantized = num * dim

    @classmethod
    def from_layer(cls, emb: nn.Embedding, k: KQuantLinear) -> "KQuantEmbedding":
        """The table of ``emb`` with the codes and grid of ``k``, a KQuantLinear of its weight."""
        scale = getattr(emb, "embed_scale", None)
        m = cls(emb.num_embeddings, emb.embedding_dim, None if scale is None else float(scale), k.kind)
        m.qweight, m.d, m.sc = k.qweight, k.d, k.sc
        if k.kind == "q4_k":
            m.dmin, m.mn = k.dmin, k.mn
        return m

    def rows(self, idx: slice | torch.Tensor) -> torch.Tensor:
        q, d, sc = self.qweight[idx], self.d[idx], self.sc[idx]
        lead = q.shape[:-1]  # the products in KQuantLinear.dequantize's order (llama.cpp's values)
        per = 256 // self.group
        s = d.float().repeat_interleave(per, -1) * sc.float()
        w = s[..., None] * q.float().reshape(*lead, -1, self.group)
        if self.kind == "q4_k":
            m = -(self.dmin[idx].float().repeat_interleave(per, -1) * self.mn[idx].float())
            w = w + m[..., None]
        return w.reshape(*lead, self.embedding_dim)


class QuantTiedHead(nn.Module):
    """The LM head tied to a QuantEmbedding. Holds no state of its own (the embedding's is saved
    once). The first forward call dequantizes the table once and keeps it in the activations'
    dtype: a per-call dequantization of Gemma's 262k x 640 table cost 1.5 s a token (0.67 tok/s
    against 9 for fp32), so on the PyTorch path the quantized embedding saves bytes on disk, not
    resident memory; the fast deployed form is the GGUF export."""

    def __init__(self, emb: QuantEmbedding):
        super().__init__()
        object.__setattr__(self, "_emb", emb)  # a reference, not a submodule: no duplicate state
        object.__setattr__(self, "_w", None)
        self.out_features, self.in_features = emb.num_embeddings, emb.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._w
        if w is None or w.dtype != x.dtype or w.device != x.device:
            with torch.no_grad():
                w = self._emb.rows(slice(None)).to(device=x.device, dtype=x.dtype)
            object.__setattr__(self, "_w", w)
        return x @ w.T


def empty_quantized_(model: nn.Module, q: dict) -> None:
    """In place: give ``model`` empty QuantLinear layers where an artifact recorded them (loading)."""
    if q.get("embeddings", "keep") != "keep":
        emb = model.get_input_embeddings()
        scale = None if getattr(emb, "embed_scale", None) is None else float(emb.embed_scale)
        if q["embeddings"] in KQuantLinear.SUB:
            qe = KQuantEmbedding(emb.num_embeddings, emb.embedding_dim, scale, q["embeddings"])
        else:
            qe = QuantEmbedding(emb.num_embeddings, emb.embedding_dim, scale, bits=int(q["embeddings"][3:]),
                                group=q.get("embedding_group_size"))
        model.set_input_embeddings(qe)
        if q.get("embedding_tied", True):  # artifacts before untied tables all had a tied head
            model.set_output_embeddings(QuantTiedHead(qe))
    gguf = q.get("target") in ("gguf", "q4_k_m")
    kinds = q.get("module_types", {})  # target q4_k_m: each module's GGUF type
    for n in q["modules"]:
        lin = model.get_submodule(n)
        out_f, in_f = linear_weight(lin).shape
        if kinds.get(n) in KQuantLinear.SUB:
            set_submodule(model, n, KQuantLinear(in_f, out_f, lin.bias is not None, kinds[n]))
            continue
        if n in kinds:  # q5_0 / q8_0: symmetric groups of 32
            set_submodule(model, n, QuantLinear(in_f, out_f, lin.bias is not None, 5 if kinds[n] == "q5_0" else 8,
                                                q["group_size"], True))
            continue
        bits = 8 if n in q.get("modules_8bit", ()) else q["bits"]
        sym = q.get("symmetric", True) or (gguf and bits == 8)  # GGUF's 8-bit block is symmetric (Q8_0)
        set_submodule(model, n, QuantLinear(in_f, out_f, lin.bias is not None, bits, q["group_size"],
                                            sym, fp16_min=gguf))


def save_state(model: nn.Module, out: Path) -> None:
    """save_pretrained for models with integer buffers: config + one safetensors, tied weights once."""
    from safetensors.torch import save_file

    model.config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    seen: dict[int, str] = {}
    state = {}
    for k, v in model.state_dict().items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel() > 0:  # tied (lm_head = embeddings): stored once, re-tied on load
            continue
        seen[ptr] = k
        state[k] = v.contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
