"""llama.cpp's own calibration, fed from medslm: an importance matrix for ``llama_model_quantize``.

llama.cpp's quantizer weighs each weight's rounding error by how large that weight's input column
is on calibration text (``llama-imatrix``: the mean of x_j^2 over every token that reaches a matrix
multiply, per input column j). medslm computes the same statistic with hooks on the dense model's
linear layers (the LM head too, as ``llama-imatrix --process-output``), on the calibration texts its
own methods read (so llama.cpp's calibrated Q4_0 is compared with GPTQ on the same texts), and hands
it to the quantizer by GGUF tensor name through ``llama_model_quantize_params.imatrix``. Written here because llama.cpp's ``llama-imatrix`` is a
separate binary that llama-cpp-python does not ship, and it reads only its own text files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medslm.errors import ConfigError


def gguf_names(reader) -> tuple[object, set[str]]:
    """(HF tensor name -> GGUF name map of the file's architecture, the file's tensor names)."""
    import gguf

    arch_name = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is None:
        raise ConfigError(f"imatrix: the gguf package does not know the architecture {arch_name!r}")
    n_blocks = int(reader.fields[gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch_name)].contents())
    return gguf.get_tensor_name_map(arch, n_blocks), {t.name for t in reader.tensors}


def importance_matrix(art, f16: Path, spec: str, samples: int = 64, seq_len: int = 256,
                      seed: int = 1234) -> tuple[dict[str, np.ndarray], dict]:
    """llama.cpp's importance matrix of the dense artifact ``art`` on ``samples`` calibration texts of
    ``spec`` (:func:`medslm.methods.calibration.calibration_texts`): GGUF tensor name (as in ``f16``,
    the converter's file of the same model) -> mean of x_j^2 per input column, fp32. The LM head is
    included (under ``output.weight``, or ``token_embd.weight`` when tied), as ``llama-imatrix
    --process-output`` does. Also what was computed, for the export's provenance."""
    import gguf
    import torch
    from torch import nn

    from medslm.methods.calibration import calibration_batches, calibration_texts, collect_stat, forward_until

    reader = gguf.GGUFReader(f16)
    names, present = gguf_names(reader)
    model, tok = art.load(dtype="float32")
    model.eval()
    batches = calibration_batches(tok, calibration_texts(spec, samples, seed), seq_len)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    target: dict[str, str] = {}
    for n, m in linears.items():
        if m is head:  # the LM head: its own output.weight, or the embedding table it is tied to
            g = "token_embd.weight" if tied else "output.weight"
        else:
            base = names.get_name(n, try_suffixes=())
            g = None if base is None else base + ".weight"
        if g is None or g not in present:
            raise ConfigError(f"imatrix: no tensor of {f16.name} holds the linear layer {n!r} (mapped to {g!r}); "
                              "this architecture's converter renames weights medslm cannot follow")
        target[n] = g
    # per module: the column sums of x^2 with the number of rows (tokens) as one more entry, so a
    # module called several times per pass still gets sum / count
    stats = collect_stat(linears, lambda x: torch.cat([(x * x).sum(0), x.new_tensor([x.shape[0]])]),
                         lambda: forward_until(model, batches))
    out = {}
    for n, g in target.items():
        st = stats[n]
        if st is None or st[-1] == 0:
            raise ConfigError(f"imatrix: layer {n!r} saw no calibration token; check the calibration texts "
                              f"({spec!r})")
        out[g] = (st[:-1].double() / st[-1].double()).float().numpy()
    return out, {"calibration": spec, "samples": len(batches), "seq_len": seq_len, "seed": seed,
                 "tokens": sum(int(b.numel()) for b in batches), "tensors": len(out)}


__all__ = ["gguf_names", "importance_matrix"]
