"""Export an artifact to GGUF: a dense model through llama.cpp's converter
(:mod:`medslm.export.converter`) and quantizer (:mod:`medslm.export.llama_quantize`: q4_k_m and
the other llama.cpp types, per-tensor overrides, an importance matrix); a model medslm quantized
as blocks of its own integers (:mod:`medslm.export.gguf_blocks`), no requantization.

Every export writes ``<file>.medslm.json`` beside the GGUF: source artifact, its hash and chain,
the type, the converter's version and the GGUF's SHA-256. :func:`cached_export` is a recipe
variant's export, cached by artifact hash, type and options.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from medslm.errors import ConfigError
from medslm.system import sha256_file
from medslm.export.converter import convert, converter_dir
from medslm.export.llama_quantize import (LLAMA_FLAGS, QUANT_TYPES, RECIPE_FLAGS, check_llama_options, check_patterns,
                                          parse_tensor_types, quantize, written_types)

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by convert_hf_to_gguf.py itself
TYPES = CONVERTER_TYPES + tuple(QUANT_TYPES)


# ----------------------------------------------------------------------------- export
def export_gguf(model, out: str | os.PathLike, qtype: str | None = None, *, threads: int | None = None,
                overwrite: bool = False, progress: bool = True, float_type: str = "f16",
                tensor_types: dict[str, str] | None = None, imatrix: str | None = None,
                imatrix_samples: int | None = None, flags: tuple[str, str, str] = LLAMA_FLAGS,
                save_imatrix: str | os.PathLike | None = None) -> Path:
    """Write ``model`` (a reference or ModelArtifact) as a GGUF file of type ``qtype``: a dense model
    through llama.cpp's converter and quantizer (default q4_k_m); one medslm quantized on a GGUF
    grid as blocks of its own integers (:mod:`medslm.export.gguf_blocks`; q4_0, q4_1 or q8_0).
    A dense model quantized by llama.cpp may take per-tensor types (``tensor_types``: regular
    expression on the GGUF tensor name -> type, llama-quantize's ``--tensor-type``) and llama.cpp's
    own calibration, an importance matrix computed on ``imatrix_samples`` texts of the calibration
    spec ``imatrix`` (:mod:`medslm.export.imatrix`), or read from the .gguf / .dat file llama-imatrix
    wrote when ``imatrix`` names one; ``save_imatrix``: also write the matrix medslm computed in
    llama-imatrix's GGUF format (for llama-quantize). ``flags``: how errors name those three options
    (the CLI's flags, or a recipe's fields)."""
    import tempfile

    from medslm.models.artifact import ModelArtifact, package_versions
    from medslm.models.loading import resolve

    art = model if isinstance(model, ModelArtifact) else resolve(str(model)).artifact()
    q = art.meta.extra.get("quantization")
    if q:
        from medslm.export.gguf_blocks import default_type

        qtype = (qtype or default_type(q)).lower()
    qtype = (qtype or "q4_k_m").lower()
    if qtype not in TYPES:
        raise ConfigError(f"--type {qtype!r}: choose one of {', '.join(TYPES)}")
    out = Path(out)
    if out.suffix != ".gguf":
        raise ConfigError(f"--out {out}: a GGUF file name ending in .gguf")
    from medslm.outputs import check_target

    inputs = [art.path] + ([Path(art.meta.extra["gguf_source"])] if art.meta.extra.get("gguf_source") else [])
    check_target(out, flag="--out", kind="file", inputs=inputs, overwrite=overwrite, replaceable=("gguf",))
    if float_type not in ("f16", "q8_0"):
        raise ConfigError(f"--float-type {float_type!r}: choose f16 or q8_0")
    if q:  # medslm's own integers, written as GGUF blocks (no requantization)
        from medslm.export.gguf_blocks import check_exportable

        check_exportable(art, qtype)
    elif float_type != "f16":
        raise ConfigError("--float-type applies to a model medslm quantized (the tensors it kept in float); "
                          f"for a dense model choose --type {qtype}")
    tensor_types = parse_tensor_types(tensor_types or {}, flag=flags[0])
    check_llama_options(qtype, tensor_types, imatrix, imatrix_samples, quantized=bool(q), flags=flags)
    from medslm.export.imatrix import is_imatrix_file, load_imatrix_file

    # a matrix file is parsed now, so a bad one fails before the conversion's minutes
    imatrix_file = load_imatrix_file(imatrix, flags[1]) if is_imatrix_file(imatrix) else None
    if save_imatrix is not None:
        save_imatrix = Path(save_imatrix)
        if not imatrix or imatrix_file is not None:
            raise ConfigError(f"--save-imatrix {save_imatrix}: it saves the matrix medslm computes from "
                              "--imatrix CALIBRATION texts; give those (not a matrix file)")
        if not save_imatrix.name.endswith(".gguf"):
            raise ConfigError(f"--save-imatrix {save_imatrix}: llama-imatrix's format is GGUF; name the file *.gguf")
        if save_imatrix.resolve() == out.resolve():
            raise ConfigError(f"--save-imatrix {save_imatrix} is --out; choose another name")
        check_target(save_imatrix, flag="--save-imatrix", kind="file", inputs=inputs, overwrite=overwrite,
                     replaceable=("imatrix",))
    conv = converter_dir(progress=progress)
    from medslm.outputs import sweep_stale

    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out, ("tmp-export",))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".tmp-export-{out.name}-{os.getpid()}-") as td:
        tmp = Path(td)
        extra_side: dict = {}
        if q:  # the dequantized weights through the converter (f32: every value exact), then blocks
            from medslm.export.gguf_blocks import dense_copy, write_blocks

            quantized, src = dense_copy(art, tmp / "dense")
            first = convert(src, tmp, conv, "f32", art.path, pattern=False)  # write_blocks adds it
            final = tmp / f"model-{qtype}.gguf"
            extra_side = write_blocks(first, final, quantized, qtype, float_type,
                                      cfg=json.loads((src.path / "config.json").read_text()))
        else:
            if art.is_adapter:  # merge first: llama.cpp runs one set of weights
                m, tok = art.load(dtype="float32")
                merged = tmp / "merged"
                m.save_pretrained(merged)
                tok.save_pretrained(merged)
                (merged / "medslm.json").write_text("{}")
                src = ModelArtifact(merged, art.meta)
            else:
                src = art
            first = convert(src, tmp, conv, qtype if qtype in CONVERTER_TYPES else "f16", art.path)
            final = first
            if qtype in QUANT_TYPES:
                final = tmp / f"model-{qtype}.gguf"
                imat = None
                if tensor_types:
                    check_patterns(first, tensor_types, flags[0])  # before the matrix's minutes
                if imatrix_file is not None:
                    from medslm.export.imatrix import fit_imatrix

                    imat, extra_side["imatrix"] = fit_imatrix(imatrix_file, first, flag=flags[1])
                elif imatrix:
                    from medslm.export.imatrix import importance_matrix, write_imatrix_file

                    imat, extra_side["imatrix"] = importance_matrix(src, first, imatrix, imatrix_samples or 64)
                    if save_imatrix is not None:  # moved into place once the export is
                        im = extra_side["imatrix"]
                        write_imatrix_file(tmp / "imatrix.gguf", imat, im["tokens"], [im["calibration"]],
                                           im["samples"], im["seq_len"])
                        extra_side["imatrix"]["saved_as"] = str(save_imatrix)
                quantize(first, final, qtype, threads, tensor_types, imat)
                if tensor_types:  # what was asked, and what llama.cpp wrote (it falls back where rows do not fit)
                    extra_side["tensor_types"] = tensor_types
                    extra_side["tensor_types_written"] = written_types(final, tensor_types)
        side = {"source": str(art.path), "source_hash": art.hash, "chain": art.step_chain(),
                "steps": art.meta.steps, "type": qtype, "bytes": final.stat().st_size,
                "sha256": sha256_file(final), "converter": str(conv / "convert_hf_to_gguf.py"),
                "packages": package_versions(("llama-cpp-python",)),
                "extra": {k: v for k, v in art.meta.extra.items() if k in ("trained_on", "contamination_allowed")},
                "source_meta": {k: getattr(art.meta, k) for k in ("source", "steps", "parameters", "dtype",
                                                                   "content_hash", "packages", "extra")},
                **extra_side}
        side_tmp = tmp / "side.json"
        side_tmp.write_text(json.dumps(side, indent=1) + "\n")
        if save_imatrix is not None:  # before --out is replaced: a failure here leaves it as it was
            from medslm.outputs import OutputError, temp_name

            save_imatrix.parent.mkdir(parents=True, exist_ok=True)
            staged = temp_name(save_imatrix)
            try:  # a sibling first (the folder may be on another filesystem), then an atomic rename
                shutil.move(str(tmp / "imatrix.gguf"), staged)
                os.replace(staged, save_imatrix)
            except OSError as e:
                staged.unlink(missing_ok=True)
                raise OutputError(f"--save-imatrix {save_imatrix}: could not be written ({e.strerror}); "
                                  "--out was left as it was") from e
        os.replace(final, out)  # same filesystem: atomic
        os.replace(side_tmp, sidecar(out))
    from medslm.models.card import write_gguf_card

    write_gguf_card(out, side["source_meta"], qtype=qtype)  # <file>.gguf.README.md, the Hub card
    return out


def sidecar(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".medslm.json")


# Bumped when the files medslm writes change for the same artifact, so cached exports are redone:
# 2 = the per-layer sliding-window pattern (layer_pattern); 3 = that pattern left out of dense
# exports whose layers are llama.cpp's default (no rewrite), always in medslm's blocks
EXPORT_FORMAT = 3


def export_key(art_hash: str, qtype: str, options: dict | None = None) -> str:
    """The cache key of an export; ``options`` (per-tensor types, the importance matrix's texts) only
    when set, so the keys of every export without them stay what they were."""
    # tensor_types as ordered pairs: the first pattern a tensor matches wins, so order is content
    opts = {k: list(map(list, v.items())) if k == "tensor_types" else v for k, v in (options or {}).items()}
    opts = f":{json.dumps(opts, sort_keys=True)}" if opts else ""
    return hashlib.sha256(f"{art_hash}:{qtype}:{EXPORT_FORMAT}{opts}".encode()).hexdigest()[:20]


__all__ = ["TYPES", "cached_export", "export_gguf", "export_key", "sidecar"]


def cached_export(art, qtype: str | None, name: str, log, tensor_types: dict[str, str] | None = None,
                  imatrix: str | None = None, imatrix_samples: int | None = None,
                  lookup_only: bool = False) -> Path | None:
    """The artifact as GGUF ``qtype`` (default: its own integers' type if medslm quantized it,
    else q4_k_m), cached by (artifact hash, type, options) in the medslm cache; a recipe variant's
    export (``tensor_types``, ``imatrix``: as :func:`export_gguf`). ``lookup_only``: the cached
    file, or None where it is not there (nothing is exported)."""
    import time

    from medslm import settings

    q = art.meta.extra.get("quantization")
    if q and not qtype:
        from medslm.export.gguf_blocks import default_type

        qtype = default_type(q)
    qtype = qtype or "q4_k_m"
    from medslm.export.imatrix import imatrix_file_hash, is_imatrix_file

    im_opt = imatrix and ({"file": imatrix_file_hash(imatrix)} if is_imatrix_file(imatrix)  # by content
                          else {"calibration": imatrix, "samples": imatrix_samples or 64})
    options = {k: v for k, v in (("tensor_types", tensor_types), ("imatrix", im_opt)) if v}
    out = settings.cache_dir() / "gguf" / f"{export_key(art.hash, qtype, options)}-{qtype}.gguf"
    if out.is_file():
        log(f"  {name}: export {qtype} cached ({out.name})")
        return out
    if lookup_only:
        return None
    t = time.perf_counter()
    log(f"  {name}: export to GGUF {qtype} ...")
    export_gguf(art, out, qtype, progress=False, tensor_types=tensor_types, imatrix=imatrix,
                imatrix_samples=imatrix_samples, flags=RECIPE_FLAGS)
    log(f"  {name}: export done in {time.perf_counter() - t:.0f}s ({out.stat().st_size / 2**20:.0f} MiB)")
    return out
