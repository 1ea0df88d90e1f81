"""compressed-tensors export: medslm's own integers in the format llm-compressor writes and
vLLM and transformers read (``pip install 'medslm[ct]'``).

``medslm export --model q4 --format compressed-tensors --out q4-ct`` writes a Hugging Face directory
whose quantized Linear layers are ``pack-quantized`` (the ``compressed-tensors`` library's format:
int4 / int8 codes packed in int32, ``weight_scale`` per group, ``weight_shape``) and whose
``config.json`` carries the ``quantization_config`` transformers' ``CompressedTensorsHfQuantizer``
and vLLM read. No requantization happens: the
library packs ``round(w / scale)`` of medslm's dequantized weights with medslm's own scales,
which gives back medslm's integers exactly (checked on the written file before it is kept).

- symmetric groups: ``w = q * scale`` (q in -8..7 / -128..127), as compressed-tensors' symmetric int;
- asymmetric artifacts are refused: transformers cannot load asymmetric pack-quantized checkpoints
  (llm-compressor issue #1618; still so with compressed-tensors 0.20.1 and transformers 5.24);
- mixed precision (``--bits8``): one config group per width;
- GPTQ's act-order keeps medslm's groups contiguous, so no ``g_idx`` is needed;
- scales are stored as float32 holding medslm's fp16 values exactly (so the product ``q * scale``
  is the one medslm computes); the tensors medslm kept in float (norms, and the tied embedding,
  dequantized when medslm stored it as integers) are float32.

Refused with the fix: a model medslm did not quantize, and asymmetric ones. A pruned (sparse) model
is refused with the reason: compressed-tensors 0.20 keeps ``sparse-bitmask`` and
``sparse-24-bitmask`` only as names of legacy formats and has no compressor for either, so the
library medslm writes with cannot store zeros in fewer bytes; a sparse model quantized afterwards
exports as ``pack-quantized`` like any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from medslm.errors import ConfigError, MedslmError

FORMAT = "pack-quantized"


def _library():
    try:
        import compressed_tensors
    except ImportError as e:
        raise MedslmError("the compressed-tensors export needs the compressed-tensors library: "
                          "pip install 'medslm[ct]'") from e
    return compressed_tensors


def _layers(model, path) -> dict[str, dict[str, Any]]:
    """{Linear name: bits, group, scales (fp32 holding medslm's fp16), codes (int16, for the check)} of
    every QuantLinear (symmetric: compressed-tensors' symmetric int is medslm's ``q * scale``)."""
    from medslm.models.quantized import QuantLinear, unpack_codes

    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, QuantLinear):
            continue
        codes = unpack_codes(m.qweight, m.bits, m.in_features, m.symmetric)
        if not m.symmetric:
            raise ConfigError(
                f"export --format compressed-tensors: {path}: {name} is asymmetric; transformers cannot load "
                "asymmetric pack-quantized checkpoints (their packed zero points meet an unpacked shape on "
                "load: llm-compressor issue #1618, still so with compressed-tensors 0.20.1 and transformers "
                "5.24), so medslm does not write one: quantize symmetric (the default)")
        out[name] = {"bits": m.bits, "group": m.group_size, "scales": m.scales.float(), "codes": codes}
    return out


def quantization_config(layers: dict[str, dict[str, Any]]):
    """compressed-tensors' QuantizationConfig: one group per (bits, group size), targeting
    the layers by name."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    kinds: dict[tuple, list[str]] = {}
    for name, q in layers.items():
        kinds.setdefault((q["bits"], q["group"]), []).append(name)
    groups = {}
    for i, ((bits, group), names) in enumerate(sorted(kinds.items())):
        groups[f"group_{i}"] = QuantizationScheme(
            targets=[f"re:^{n.replace('.', '[.]')}$" for n in names],
            weights=QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group",
                                     group_size=group, dynamic=False))
    return QuantizationConfig(config_groups=groups, format=FORMAT, ignore=["lm_head"])


def export_compressed_tensors(art, out: str | Path, *, progress: bool = True) -> Path:
    """``art`` (a medslm-quantized artifact) as a compressed-tensors directory at ``out``."""
    _library()
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import apply_quantization_config

    from medslm.export.gguf_blocks import dense_state

    out = Path(out)
    if out.exists():
        raise MedslmError(f"--out {out} exists; medslm never overwrites a model directory: choose a new path")
    extra = art.meta.extra or {}
    if not extra.get("quantization") and extra.get("sparsity"):
        raise ConfigError(
            f"export --format compressed-tensors: {art.path} is pruned to {extra['sparsity']:.0%} sparsity and "
            "not quantized; compressed-tensors "
            f"{_library().__version__} has no sparse compressor (it lists sparse-bitmask and sparse-24-bitmask "
            "as legacy formats and writes neither), so its zeros would be stored dense: quantize it "
            "(`medslm quantize --bits 4`, then this export), or export it as GGUF")
    if not extra.get("quantization"):
        raise ConfigError(f"export --format compressed-tensors: {art.path} is not quantized by medslm; run "
                          "`medslm quantize --bits 4` first (a dense model needs no compressed-tensors)")
    if art.meta.extra["quantization"].get("target") == "q4_k_m":
        raise ConfigError(f"export --format compressed-tensors: {art.path} is on llama.cpp's Q4_K_M grid (K-quant "
                          "super-blocks, 5-bit Q5_0), which compressed-tensors has no format for: export it as "
                          "GGUF (`medslm export --type q4_k_m`), or quantize with --target gguf for both")
    model, tok = art.load(dtype="float32")
    layers = _layers(model, art.path)
    dense = dense_state(model, art)
    mods = dict(dense.named_modules())
    other = next((n for n in layers if not isinstance(mods[n], torch.nn.Linear)), None)
    if other:
        raise ConfigError(f"export --format compressed-tensors: {art.path}: {other} is a "
                          f"{type(mods[other]).__name__}, not an nn.Linear, and compressed-tensors packs "
                          "nn.Linear layers only (GPT-2's Conv1D); export it as GGUF instead")
    qcfg = quantization_config(layers)
    apply_quantization_config(dense, qcfg, show_progress=progress)
    mods = dict(dense.named_modules())  # after the library attached its parameters
    with torch.no_grad():
        for name, q in layers.items():
            m = mods[name]
            m.weight_scale.data = q["scales"].clone()
            if hasattr(m, "weight_zero_point"):
                m.weight_zero_point.data.zero_()
    comp = ModelCompressor.from_pretrained_model(dense, FORMAT)
    comp.compress_model(dense)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    dense.save_pretrained(tmp)
    comp.update_config(str(tmp))
    tok.save_pretrained(tmp)
    check = verify(tmp, layers)
    side = {"format": "compressed-tensors", "compression": FORMAT, "source": str(art.path),
            "source_hash": art.hash, "chain": art.step_chain(),
            "layers": len(layers), "exact": check, "compressed_tensors": _library().__version__}
    (tmp / "medslm-export.json").write_text(json.dumps(side, indent=1))
    from dataclasses import asdict

    from medslm.models.card import CARD, build_card

    card = build_card(asdict(art.meta), name=out.name, model_hash=None, results=[])
    card.data.tags = [*(card.data.tags or []), "compressed-tensors", "w4a16"]
    (tmp / CARD).write_text(str(card))  # the Hub card, as every medslm model directory carries
    tmp.rename(out)
    return out


def verify(path: Path, layers: dict[str, dict[str, Any]]) -> bool:
    """Every packed layer of the written directory unpacks to medslm's integers and scales."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    for name, q in layers.items():
        shape = tuple(int(x) for x in state[f"{name}.weight_shape"])
        codes = unpack_from_int32(state[f"{name}.weight_packed"], q["bits"], shape)
        if not torch.equal(codes.to(torch.int16), q["codes"].to(torch.int16)) or \
                not torch.equal(state[f"{name}.weight_scale"].float(), q["scales"]):
            raise MedslmError(f"export: {path}: {name} did not pack to medslm's integers; nothing was kept")
    return True
