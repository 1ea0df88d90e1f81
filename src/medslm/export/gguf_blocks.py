"""medslm's own integers as GGUF blocks, without requantization.

A medslm quantization with groups of 32 already *is* a GGUF block grid:

- symmetric int8 codes and one fp16 scale per 32 weights are a ``Q8_0`` block (``w = d * q``);
- symmetric int4 codes in -8..7 and an fp16 scale are a ``Q4_0`` block (``w = d * (n - 8)`` with
  ``n = q + 8``);
- asymmetric int4 codes in 0..15, an fp16 scale and a zero point are a ``Q4_1`` block
  (``w = d * q + m``) with ``m = -scale * zero``; exact when ``m`` is an fp16 number, which
  ``medslm quantize --target gguf`` guarantees (it chooses the integers for the fp16-rounded ``m``);
- an embedding quantized in groups of 32 (``--embeddings int8|int4``) is Q8_0 / Q4_0 in the same way,
  and a Q6_K one (``--embeddings q6_k``, or ``auto`` under ``--target q4_k_m`` where the rows are a
  multiple of 256 wide) is Q6_K super-blocks;
- ``medslm quantize --target q4_k_m`` layers are Q4_K / Q6_K super-blocks and symmetric 5-bit
  Q5_0 blocks (their packing: :mod:`medslm.export.gguf_kblocks`), with llama.cpp's Q4_K_M file type.

So the export keeps every integer and scale medslm chose (RTN, clip search or GPTQ) and llama.cpp
computes with exactly medslm's dequantized weights; mixed precision (``--bits8``) becomes Q8_0
tensors in a Q4_0/Q4_1 file.

How: the dequantized model goes through llama.cpp's converter as f32 (so its metadata, tokenizer
and tensor names are llama.cpp's own, and every value is exact); then each tensor medslm
quantized is found in that file by its rows (a converter may permute rows, as it does for
Llama's q/k projections) and replaced by medslm's blocks, written with the ``gguf`` package;
other 2-D tensors are stored f16 (or ``--float-type q8_0``) and 1-D ones f32 (as llama.cpp's f16
export does); an int8 embedding of an artifact from before groups (one scale per row) as Q8_0, the
one requantization, listed in the sidecar. The blocks are read back and dequantized with ``gguf``
and checked equal to medslm's weights before the file is kept.

Why medslm packs the blocks itself: ``gguf.quants`` quantizes floats by its own rounding (Q4_0's
scale is the signed max over -8), which would replace medslm's integers; only the block layout is
needed, and it is a few lines per type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medslm.errors import ConfigError
from medslm.export.gguf_file import copy_fields, pattern_of

BLOCK = 32
TYPES = ("q4_0", "q4_1", "q8_0", "q4_k_m")


def default_type(q: dict) -> str:
    """The GGUF type of an artifact's main (non-8-bit) tensors (q4_k_m: the file type of the mix)."""
    if q.get("target") == "q4_k_m":
        return "q4_k_m"
    if q["bits"] == 8:
        return "q8_0"
    return "q4_0" if q.get("symmetric", True) else "q4_1"


def check_exportable(art, qtype: str) -> None:
    """A quantized artifact exports as ``qtype`` only if its integers sit on that grid."""
    q = art.meta.extra["quantization"]
    fix = ("quantize the dense model with `medslm quantize --target gguf` (groups of 32; RTN, "
           "--clip-search or --algorithm gptq; --asymmetric for q4_1), then export it")
    if qtype not in TYPES:
        raise ConfigError(f"--type {qtype}: {art.path} holds medslm's own integers ({q.get('scheme')}), which "
                          f"export without requantization as {' / '.join(TYPES)} only (this one as "
                          f"{default_type(q)}); or export the dense model before `quantize` and let llama.cpp "
                          "quantize it")
    if q.get("target") == "q4_k_m" and qtype != "q4_k_m":
        raise ConfigError(f"--type {qtype}: {art.path} holds llama.cpp's Q4_K_M mix of types (quantized with "
                          "--target q4_k_m): export it with --type q4_k_m (or drop --type)")
    if qtype == "q4_k_m" and q.get("target") != "q4_k_m":
        raise ConfigError(f"--type q4_k_m: {art.path} is not on the Q4_K_M grid ({q.get('scheme')}); quantize "
                          f"the dense model with `medslm quantize --target q4_k_m`, or export this one as "
                          f"{default_type(q)}, or export the dense model before `quantize` and let llama.cpp "
                          "quantize it")
    if q["group_size"] != BLOCK:
        raise ConfigError(f"--type {qtype}: {art.path} has groups of {q['group_size']}, GGUF blocks hold "
                          f"{BLOCK} weights: {fix}")
    if q["bits"] == 8 and not q.get("symmetric", True):
        raise ConfigError(f"--type {qtype}: {art.path} is asymmetric 8-bit; GGUF's 8-bit block (Q8_0) is "
                          f"symmetric: {fix} (without --asymmetric)")
    if qtype != default_type(q):
        raise ConfigError(f"--type {qtype}: {art.path} is {q['bits']}-bit "
                          f"{'symmetric' if q.get('symmetric', True) else 'asymmetric'}, so its blocks are "
                          f"{default_type(q)}: export it with --type {default_type(q)} (or drop --type)")


SYMMETRIC = {4: "q4_0", 5: "q5_0", 8: "q8_0"}  # symmetric groups of 32 by bits


def _codes(m):
    """(GGUF type name, (row-indexed arrays the block packer takes)) of a QuantLinear, KQuantLinear
    or grouped QuantEmbedding, or None where it is not a block grid. The arrays: integer codes
    (rows, cols) first, then per-block numbers (fp16 scales, offsets; a K-quant's d, dmin, sc, mn)."""
    import torch

    from medslm.models.quantized import KQuantEmbedding, KQuantLinear, QuantEmbedding, offset, unpack_codes

    if isinstance(m, (KQuantLinear, KQuantEmbedding)):
        parts = (m.d, m.dmin, m.sc, m.mn) if m.kind == "q4_k" else (m.d, m.sc)  # a table: q6_k
        return m.kind, (m.qweight.numpy(), *(t.numpy() for t in parts))
    if isinstance(m, QuantEmbedding):
        if m.group != BLOCK:
            return None
        codes = unpack_codes(m.qweight, m.bits, m.embedding_dim)
        return SYMMETRIC[m.bits], (codes.numpy(), m.scales.numpy().astype(np.float16))
    if m.group_size != BLOCK:
        return None
    codes = unpack_codes(m.qweight, m.bits, m.in_features, m.symmetric).numpy()
    scales = m.scales.numpy().astype(np.float16)
    if m.symmetric:
        return SYMMETRIC[m.bits], (codes, scales)
    if m.bits != 4:
        return None
    exact = -m.scales.float() * m.zeros.float()
    mins = offset(m.scales, m.zeros)
    if not m.fp16_min and not torch.equal(exact, mins):
        return None  # (q - zero) * scale has offsets fp16 cannot hold: not exactly Q4_1
    return "q4_1", (codes, scales, mins.numpy().astype(np.float16))


def dense_state(model, art=None):
    """The dense twin of a loaded medslm-quantized ``model``: every QuantLinear / QuantEmbedding
    replaced by a float32 Linear / Embedding holding exactly its dequantized weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from medslm.models.quantized import KQuantLinear, QuantEmbedding, QuantLinear

    dense = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    target = dict(dense.named_modules())
    state: dict[str, torch.Tensor] = {}
    done: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, KQuantLinear)):  # (out, in); GPT-2's Conv1D stores (in, out)
            w = m.dequantize()
            state[f"{name}.weight"] = w if isinstance(target[name], torch.nn.Linear) else w.t().contiguous()
            if m.bias is not None:
                state[f"{name}.bias"] = m.bias.data
            done.append(name)
        elif isinstance(m, QuantEmbedding):
            state[f"{name}.weight"] = m.rows(slice(None))
            done.append(name)
    for k, v in model.state_dict().items():  # norms, biases and whatever stayed in float
        if not any(k.startswith(n + ".") for n in done):
            state.setdefault(k, v)
    dense.load_state_dict(state, strict=False)
    dense.tie_weights()
    return dense


def dense_copy(art, out: Path):
    """The artifact's dequantized dense model written at ``out`` (an artifact the converter reads),
    and {module name: (dequantized weight, GGUF type or None, codes, scales, offsets)} of what
    medslm quantized (type None: not a block grid; requantized to Q8_0)."""
    from medslm.models.artifact import ModelArtifact
    from medslm.models.quantized import KQuantLinear, QuantEmbedding, QuantLinear

    model, tok = art.load(dtype="float32")
    dense = dense_state(model, art)
    weights = dict(dense.named_parameters(remove_duplicate=False))
    quantized: dict[str, Any] = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, KQuantLinear)):
            blocks = _codes(m)
            if blocks is None:
                raise ConfigError(f"export: {art.path}: {name} is asymmetric with offsets (-scale * zero) that "
                                  "fp16 cannot hold, so it is not exactly Q4_1; quantize the dense model with "
                                  "`medslm quantize --target gguf --asymmetric` (integers chosen for the fp16 "
                                  "offsets), or symmetric for q4_0")
            quantized[name] = (weights[f"{name}.weight"].detach().numpy(), *blocks)
        elif isinstance(m, QuantEmbedding):
            quantized[name] = (weights[f"{name}.weight"].detach().numpy(), *(_codes(m) or (None, ())))
    out.mkdir(parents=True)
    dense.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "medslm.json").write_text("{}")
    return quantized, ModelArtifact(out, art.meta)


class RowIndex:
    """Finds which quantized weight a converter's tensor holds, and in which row order: every row of
    every weight indexed once by a hash of its bytes, then checked value for value."""

    def __init__(self, quantized: dict):
        self.quantized = quantized
        self.rows: dict[int, tuple[str, int]] = {}
        for name, (w, *_) in quantized.items():
            for i in range(w.shape[0]):
                self.rows.setdefault(hash(w[i].tobytes()), (name, i))

    def find(self, t: np.ndarray) -> tuple[str, np.ndarray] | None:
        """(weight name, permutation p with t == w[p]) or None."""
        first = self.rows.get(hash(np.ascontiguousarray(t[0]).tobytes()))
        if first is None:
            return None
        name = first[0]
        w = self.quantized[name][0]
        if w.shape != t.shape:
            return None
        p = np.empty(t.shape[0], dtype=np.int64)
        for i in range(t.shape[0]):
            hit = self.rows.get(hash(np.ascontiguousarray(t[i]).tobytes()))
            if hit is None or hit[0] != name:
                return None
            p[i] = hit[1]
        return (name, p) if np.array_equal(w[p], t) else None


def q8_0_blocks(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    rows, cols = codes.shape
    qs = codes.astype(np.int8).reshape(rows, cols // BLOCK, BLOCK).view(np.uint8)
    return np.concatenate([_halves(scales, rows, cols // BLOCK), qs], -1).reshape(rows, -1)


def _halves(x: np.ndarray, rows: int, nb: int) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float16).reshape(rows, nb, 1).view(np.uint8).reshape(rows, nb, 2)


def _nibbles(n: np.ndarray) -> np.ndarray:
    """16 bytes per block: low nibbles hold weights 0..15, high nibbles 16..31 (ggml's order)."""
    return n[..., :16] | (n[..., 16:] << 4)


def q4_0_blocks(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Per block: fp16 d, then the codes + 8 as nibbles."""
    rows, cols = codes.shape
    n = (codes.astype(np.int16) + 8).astype(np.uint8).reshape(rows, cols // BLOCK, BLOCK)
    return np.concatenate([_halves(scales, rows, cols // BLOCK), _nibbles(n)], -1).reshape(rows, -1)


def q4_1_blocks(codes: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """Per block: fp16 d, fp16 m, then the codes 0..15 as nibbles (``w = d * q + m``)."""
    rows, cols = codes.shape
    n = codes.astype(np.uint8).reshape(rows, cols // BLOCK, BLOCK)
    nb = cols // BLOCK
    return np.concatenate([_halves(scales, rows, nb), _halves(mins, rows, nb), _nibbles(n)], -1).reshape(rows, -1)


def pack(kind: str, arrays: tuple) -> np.ndarray:
    """The blocks of ``kind`` from :func:`_codes`' arrays."""
    from medslm.export import gguf_kblocks as k

    return {"q4_0": q4_0_blocks, "q4_1": q4_1_blocks, "q8_0": q8_0_blocks, "q5_0": k.q5_0_blocks,
            "q4_k": k.q4_k_blocks, "q6_k": k.q6_k_blocks}[kind](*arrays)


def write_blocks(f32: Path, out: Path, quantized: dict, qtype: str, float_type: str = "f16",
                 cfg: dict | None = None) -> dict:
    """``f32`` (the converter's file of the dequantized model) with medslm's tensors as blocks.
    ``float_type``: how the 2-D tensors medslm kept in float (the embedding) are stored: f16, or
    q8_0 (llama.cpp's own rounding: a requantization, listed in the result). ``cfg`` (the model's
    config.json): its per-layer sliding-window pattern is written too (:func:`pattern_of`)."""
    import gguf
    from tqdm.auto import tqdm

    Q = gguf.GGMLQuantizationType
    reader = gguf.GGUFReader(f32)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(out, arch)
    copy_fields(reader, writer, skip=(gguf.Keys.General.FILE_TYPE,))
    pattern = pattern_of(reader, cfg or {}, f32)
    if pattern is not None:
        writer.add_sliding_window_pattern(pattern)
    writer.add_file_type({"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}[qtype])
    todo = dict(quantized)
    index = RowIndex(quantized)
    written: dict[str, tuple[Any, np.ndarray]] = {}  # gguf name -> (type, expected dequantized values)
    requantized = []
    types: dict[str, int] = {}
    for t in tqdm(reader.tensors, desc="gguf: medslm blocks", unit="tensor", leave=False):
        data = np.asarray(t.data)
        found = index.find(data) if data.ndim == 2 and data.dtype == np.float32 else None
        match = None
        if found is not None and found[0] in todo:
            n, p = found
            match = (n, p, *todo[n][1:])
        if match is None:
            if data.ndim == 2 and float_type == "q8_0" and data.shape[1] % BLOCK == 0:
                blocks = gguf.quants.quantize(data, Q.Q8_0)
                writer.add_tensor(t.name, blocks, raw_dtype=Q.Q8_0)
                written[t.name] = (Q.Q8_0, gguf.quants.dequantize(blocks, Q.Q8_0))
                requantized.append(t.name)
            elif data.ndim == 2:
                writer.add_tensor(t.name, data.astype(np.float16))
                written[t.name] = (Q.F16, data.astype(np.float16).astype(np.float32))
            else:
                writer.add_tensor(t.name, data)
                written[t.name] = (Q.F32, data)
            continue
        n, p, kind, arrays = match
        del todo[n]
        if kind is None:  # int8 rows with a per-row scale (artifacts before groups): not a block grid
            blocks = gguf.quants.quantize(data, Q.Q8_0)
            writer.add_tensor(t.name, blocks, raw_dtype=Q.Q8_0)
            written[t.name] = (Q.Q8_0, gguf.quants.dequantize(blocks, Q.Q8_0))
            requantized.append(t.name)
            continue
        blocks = pack(kind, tuple(a[p] for a in arrays))
        gtype = Q[kind.upper()]
        writer.add_tensor(t.name, blocks, raw_dtype=gtype)
        written[t.name] = (gtype, data)  # dequantized, these blocks must give back exactly data
        types[kind] = types.get(kind, 0) + 1
    if todo:
        raise ConfigError(f"export: the converter's file has no tensor with the rows of {sorted(todo)[:3]}; "
                          "this architecture's converter transforms weights medslm cannot follow")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    exact = verify_blocks(out, written)
    return {"medslm_integers": {"tensors": sum(types.values()), "types": types, "exact": exact,
                                "requantized_to_q8_0": requantized}}


def verify_blocks(path: Path, expected: dict) -> bool:
    """Every tensor of ``path``, dequantized by ``gguf``, equals what was meant to be written."""
    import gguf

    for t in gguf.GGUFReader(path).tensors:
        kind, want = expected[t.name]
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
        if t.tensor_type != kind or not np.array_equal(got.astype(np.float32), want.astype(np.float32)):
            raise ConfigError(f"export: {t.name} does not read back as written ({t.tensor_type.name}); "
                              "the GGUF was not kept")
    return True
