"""llama.cpp's own quantizer (``llama_cpp.llama_model_quantize``), as medslm drives it: a dense
model's f16 GGUF to llama.cpp's types, with llama-quantize's per-tensor overrides (``--tensor-type``)
and an importance matrix (:mod:`medslm.export.imatrix`); the options are checked where they would
do nothing or fail late, and errors name the CLI flag or the recipe field that set them."""

from __future__ import annotations

import re
from pathlib import Path

from medslm.errors import ConfigError, MedslmError

QUANT_TYPES = {  # made from f16 by llama.cpp's quantizer (llama_ftype values)
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1", "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1", "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K", "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    # llama.cpp's non-linear grids; those marked in NEEDS_IMATRIX only with an importance matrix
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL", "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "iq3_m": "LLAMA_FTYPE_MOSTLY_IQ3_M", "iq3_xxs": "LLAMA_FTYPE_MOSTLY_IQ3_XXS",
    "iq2_m": "LLAMA_FTYPE_MOSTLY_IQ2_M", "iq2_xs": "LLAMA_FTYPE_MOSTLY_IQ2_XS",
}
NEEDS_IMATRIX = ("iq2_xs", "iq2_m")  # llama.cpp refuses these without one (llama-quant.cpp, "missing importance matrix")
# how errors name the options of llama.cpp's quantizer: the CLI's flags, a recipe variant's fields
LLAMA_FLAGS = ("--tensor-type", "--imatrix", "--imatrix-samples")
RECIPE_FLAGS = ("gguf_types:", "gguf_imatrix:", "gguf_imatrix_samples:")

# llama.cpp's tensor types a --tensor-type override may name (its block types, and floats)
OVERRIDE_TYPES = ("f32", "f16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "iq4_nl", "iq4_xs", "q2_k", "q3_k",
                  "q4_k", "q5_k", "q6_k")


def parse_tensor_types(items, flag: str = "--tensor-type") -> dict[str, str]:
    """``PATTERN=TYPE`` items (llama-quantize's ``--tensor-type``: a regular expression searched in
    each GGUF tensor name, e.g. ``ffn_(gate|up|down)=q8_0`` or ``token_embd=q5_0``) as a dict,
    checked: each pattern compiles and each type is one llama.cpp quantizes to."""
    out: dict[str, str] = {}
    for item in items.items() if isinstance(items, dict) else [tuple(i.rsplit("=", 1)) for i in items]:
        if len(item) != 2 or not item[0] or not item[1]:
            raise ConfigError(f"{flag} {'='.join(item)!r}: give PATTERN=TYPE, e.g. 'ffn_down=q8_0'")
        pat, t = item[0], str(item[1]).lower()
        try:
            re.compile(pat)
        except re.error as e:
            raise ConfigError(f"{flag} {pat}={t}: the pattern is not a regular expression ({e})") from e
        if t not in OVERRIDE_TYPES:
            raise ConfigError(f"{flag} {pat}={t}: choose a type of {', '.join(OVERRIDE_TYPES)}")
        out[pat] = t
    return out


def check_llama_options(qtype: str, tensor_types: dict, imatrix: str | None, imatrix_samples: int | None,
                        quantized: bool = False, flags: tuple[str, str, str] = LLAMA_FLAGS) -> None:
    """The options of llama.cpp's quantizer, refused where they would do nothing or fail late:
    ``quantized``: the artifact holds medslm's own integers (their types are its quantize step's)."""
    if (tensor_types or imatrix) and (quantized or qtype not in QUANT_TYPES):
        flag = flags[0] if tensor_types else flags[1]
        why = ("the GGUF holds medslm's own integers, whose types its quantize step chose (--bits8, --embeddings)"
               if quantized else f"{qtype} is written by the converter, not llama.cpp's quantizer")
        raise ConfigError(f"{flag} applies where llama.cpp quantizes a dense model (type "
                          f"{' | '.join(QUANT_TYPES)}): {why}")
    from medslm.export.imatrix import check_imatrix_file, is_imatrix_file

    if imatrix_samples is not None and not imatrix:
        raise ConfigError(f"{flags[2]} {imatrix_samples}: it counts the texts of {flags[1]}, which is not given")
    if imatrix_samples is not None and is_imatrix_file(imatrix):
        raise ConfigError(f"{flags[2]} {imatrix_samples}: it counts calibration texts, but {flags[1]} {imatrix} is "
                          "a matrix llama-imatrix already computed; drop it")
    if imatrix_samples is not None and imatrix_samples < 1:
        raise ConfigError(f"{flags[2]} {imatrix_samples}: give at least 1")
    if qtype in NEEDS_IMATRIX and not imatrix:
        raise ConfigError(f"type {qtype}: llama.cpp quantizes to it only with an importance matrix; add "
                          f"{flags[1]} CALIBRATION (e.g. pubmedqa:fit@50,medquad)")
    if is_imatrix_file(imatrix):
        check_imatrix_file(imatrix, flags[1])


def claims(names: list[str], tensor_types: dict[str, str]) -> dict[str, list[str]]:
    """pattern -> the tensor names it decides (the first pattern a name matches wins)."""
    claims: dict[str, list[str]] = {p: [] for p in tensor_types}
    for n in names:
        p = next((p for p in tensor_types if re.search(p, n)), None)
        if p is not None:
            claims[p].append(n)
    return claims


def check_patterns(src: Path, tensor_types: dict[str, str], flag: str = "--tensor-type") -> None:
    """Each pattern decides the type of at least one weight matrix of ``src`` (a typo, a pattern
    matching only norms, or one every name of which an earlier pattern takes, would do nothing)."""
    import gguf

    weights = [t.name for t in gguf.GGUFReader(src).tensors if len(t.shape) >= 2]
    for pat, names in claims(weights, tensor_types).items():
        if not names:
            raise ConfigError(f"{flag} {pat}={tensor_types[pat]}: no weight matrix is decided by {pat!r} (no name "
                              "matches, or an earlier pattern takes each one); the names look like "
                              f"{', '.join(weights[:4])}")


def written_types(path: Path, tensor_types: dict[str, str]) -> dict[str, dict[str, int]]:
    """pattern -> {the type llama.cpp wrote: how many tensors} for the weights each pattern decides."""
    from collections import Counter

    import gguf

    types = {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(path).tensors}
    return {pat: dict(Counter(types[n] for n in names if types[n] != "f32"))
            for pat, names in claims(list(types), tensor_types).items()}


def quantize(src: Path, dst: Path, qtype: str, threads: int | None, tensor_types: dict[str, str] | None = None,
              imatrix: dict | None = None) -> None:
    """llama.cpp's quantizer: ``src`` (f16 GGUF) to ``qtype``, with per-tensor type overrides (the
    first pattern a tensor name matches wins, as in llama-quantize) and an importance matrix
    (:func:`medslm.export.imatrix.importance_matrix`) when given."""
    import ctypes

    try:
        import llama_cpp
    except ImportError as e:
        raise MedslmError(f"--type {qtype} needs llama-cpp-python: pip install 'medslm[llamacpp]'") from e
    from medslm.backends.llamacpp import free_cores

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[qtype])
    params.nthread = int(threads or free_cores())
    keep = []  # ctypes arrays the call reads: alive until it returns
    if tensor_types:
        over = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()  # zeroed: the terminator
        for i, (pat, t) in enumerate(tensor_types.items()):
            over[i].pattern = pat.encode()
            over[i].type = getattr(llama_cpp, "GGML_TYPE_" + t.upper())
        keep.append(over)
        params.tt_overrides = ctypes.cast(over, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if imatrix:
        import numpy as np

        data = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, v) in enumerate(imatrix.items()):
            v = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(v)
            data[i].name = name.encode()
            data[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            data[i].size = v.size
        keep.append(data)
        params.imatrix = ctypes.cast(data, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        hint = ("; llama.cpp wants an importance matrix for some i-quant tensors: add --imatrix CALIBRATION"
                if qtype.startswith("iq") and not imatrix else "")
        raise MedslmError(f"llama.cpp could not quantize {src.name} to {qtype} (code {rc}; its log above says "
                          f"why){hint}")


__all__ = ["LLAMA_FLAGS", "NEEDS_IMATRIX", "OVERRIDE_TYPES", "QUANT_TYPES", "RECIPE_FLAGS", "check_llama_options",
           "check_patterns", "claims", "parse_tensor_types", "quantize", "written_types"]
