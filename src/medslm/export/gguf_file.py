"""Rewriting a GGUF file around llama.cpp's converter: its metadata copied into a new writer, and the
per-layer sliding-window pattern the converter leaves out."""

from __future__ import annotations

import os
from pathlib import Path

from medslm.errors import MedslmError


def copy_fields(reader, writer, skip: tuple[str, ...] = ()) -> None:
    """Every metadata field of ``reader`` into ``writer`` but the architecture (the writer's own),
    the reader's virtual ``GGUF.*`` fields and ``skip``."""
    import gguf

    for field in reader.fields.values():
        if field.name in (gguf.Keys.General.ARCHITECTURE, *skip) or field.name.startswith("GGUF."):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)


# llama.cpp's loader, without the per-layer array: layer il slides unless il % n == n - 1
# (llama_hparams::set_swa_pattern; Gemma 2 every second layer global, Gemma 3 every sixth)
DEFAULT_SWA_PERIOD = {"gemma2": 2, "gemma3": 6}


def pattern_of(reader, cfg: dict, path: Path, *, when_default: bool = True) -> list[bool] | None:
    """The per-layer sliding-window pattern (one bool per layer, True: sliding) the GGUF read by
    ``reader`` should carry and does not, from the model's config ``layer_types``; None when it
    needs none (no sliding layers, the key already there, or, unless ``when_default``, the pattern
    llama.cpp assumes anyway)."""
    import gguf

    types = cfg.get("layer_types") or (cfg.get("text_config") or {}).get("layer_types")
    if not types or "sliding_attention" not in types:
        return None
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    key = gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch)
    n_layer = reader.fields.get(gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch))
    if key in reader.fields or n_layer is None:
        return None
    if int(n_layer.contents()) != len(types):
        raise MedslmError(f"{path}: {int(n_layer.contents())} layers in the GGUF, {len(types)} layer_types "
                          "in config.json; fix the model's config.json (layer_types: one per layer)")
    pattern = [t == "sliding_attention" for t in types]
    n = DEFAULT_SWA_PERIOD.get(arch)
    if not when_default and n and pattern == [i % n != n - 1 for i in range(len(types))]:
        return None
    return pattern


def layer_pattern(path: Path, cfg: dict) -> bool:
    """Write the model's own sliding-window layers into the GGUF ``path`` (its
    ``{arch}.attention.sliding_window_pattern``, one bool per layer) when llama.cpp would otherwise
    run the wrong ones. llama.cpp's converter does not write them for Gemma 2/3, whose loader then
    assumes the upstream pattern by layer index (Gemma 3: every sixth layer global, with its own
    RoPE base): a depth-pruned model, whose ``layer_types`` are those of the layers it kept, would
    run with the wrong layers global. The loader reads the per-layer array first when it is there.
    A model whose layers are the upstream pattern is left as the converter wrote it (no rewrite).
    Returns whether the file was rewritten."""
    import gguf

    reader = gguf.GGUFReader(path)
    pattern = pattern_of(reader, cfg, path, when_default=False)
    if pattern is None:
        return False
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    tmp = path.with_name(path.name + ".pattern")
    writer = gguf.GGUFWriter(tmp, arch)
    copy_fields(reader, writer)
    writer.add_sliding_window_pattern(pattern)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    del reader
    os.replace(tmp, path)
    return True
