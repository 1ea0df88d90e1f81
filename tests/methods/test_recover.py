"""Recovery after GPTQ (medslm.methods.recover): the trainable layer starts as exactly the stored
one, gradients reach the codes and scales, training lowers the held-out KL to the dense model, and
the recovered artifact is again on the GGUF grid (exported exactly)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny

from medslm.errors import ConfigError
from medslm.methods import compress, parse_config
from medslm.methods.quantize import rtn_codes
from medslm.methods.recover import _GridLinear
from medslm.models.quantized import QuantLinear


def _layer(symmetric: bool, fp16_min: bool, bits: int = 4) -> QuantLinear:
    torch.manual_seed(0)
    w = torch.randn(8, 64) * 0.05
    q, s, z = rtn_codes(w, bits, 32, symmetric, fp16_min=fp16_min)
    return QuantLinear.from_codes(q, s, z, bits, 32, 64, torch.zeros(8), fp16_min)


@pytest.mark.parametrize("symmetric,fp16_min,bits", [(True, False, 4), (True, False, 8), (False, False, 4),
                                                    (False, True, 4)])
def test_grid_layer_starts_as_the_stored_layer_and_freezes_back(symmetric, fp16_min, bits):
    ql = _layer(symmetric, fp16_min, bits)
    qw, sc, ref = ql.qweight.clone(), ql.scales.clone(), ql.dequantize()
    g = _GridLinear(ql)
    x = torch.randn(5, 64)
    # Q4_1's stored offset is fp16(-s * z); training uses -s * z (a difference below fp16's step)
    assert torch.allclose(g(x), x @ ref.T, atol=1e-3 if fp16_min else 1e-6)
    g(x).pow(2).sum().backward()
    assert g.v.grad.abs().sum() > 0 and g.a.grad.abs().sum() > 0  # straight-through to codes and scales
    back, changed = g.frozen()
    assert changed == 0 and torch.equal(back.qweight, qw) and torch.equal(back.scales, sc)


def test_frozen_codes_are_the_trained_ones_in_range():
    g = _GridLinear(_layer(True, False))
    with torch.no_grad():
        g.v[0, 0] = 100.0  # beyond the int4 range: clamped to 7
        g.v[0, 1] = g.v[0, 1] + 0.7  # past the half step: the next integer
        g.a[0, 0] = 0.1
    want_v = torch.clamp(torch.round(g.v.detach()), -8, 7)
    want_s = (g.s0 * torch.exp(g.a.detach())).half()
    back, changed = g.frozen()
    assert changed == 2 and torch.equal(back.scales, want_s)
    from medslm.models.quantized import unpack_codes
    assert torch.equal(unpack_codes(back.qweight, 4, 64).float(), want_v)


@pytest.mark.parametrize("cfg,msg", [
    ({"method": "quantize", "recover_steps": 10}, "recover_steps=10 applies to algorithm='gptq', not 'rtn'"),
    ({"method": "quantize", "algorithm": "gptq", "recover_steps": -1}, "recover_steps=-1: must be 0"),
    ({"method": "quantize", "algorithm": "gptq", "recover_lr": 0}, "learning rate between 0 and 1"),
])
def test_recovery_configs_are_checked(cfg, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config(cfg)


def _peaked(art, out):
    """The tiny random model with its linear weights x6 and its output head x20: confident next-token
    distributions, so 4-bit rounding moves them measurably (at init scale they are near uniform)."""
    from medslm.models.artifact import ModelArtifact

    model, tok = art.load()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings():
                m.weight.mul_(6.0)
        model.get_output_embeddings().weight.mul_(20.0)  # (Gemma's is the tied input table)
    return ModelArtifact.save(model, tok, out, source=art.meta.source)


@pytest.mark.parametrize("arch,symmetric", [("gemma3", True), ("gemma3", False), ("llama", True)])
def test_recovery_lowers_held_out_kl_and_exports_exactly(tmp_path, arch, symmetric):
    """On a tiny model: GPTQ on the GGUF grid, then 10 steps of recovery; the KL to the dense model
    on texts recovery did not train on falls, and the recovered integers export to GGUF blocks that
    dequantize (gguf package) to medslm's weights exactly."""
    pytest.importorskip("llama_cpp")
    import gguf
    import numpy as np

    from medslm.export import gguf_blocks as gb
    from medslm.export.gguf import export_gguf, sidecar

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(tiny.CORPUS))
    base = _peaked(tiny.save_artifact(arch, tmp_path / "random", spm=True), tmp_path / "base")
    cfg = {"method": "quantize", "algorithm": "gptq", "bits": 4, "target": "gguf", "symmetric": symmetric,
           "calibration": str(corpus), "samples": 4, "seq_len": 64, "bits8": ["*.v_proj"],
           "embeddings": "keep", "recover_steps": 10, "recover_scale_lr": 0.01}
    q = compress(base, cfg, tmp_path / "q")
    info = q.meta.steps[-1]
    before, after = info["recovery_kl"]
    assert info["recovery_held_texts"] > 0 and info["recovered_layers"] == info["quantized_layers"]
    assert after < 0.9 * before, (before, after)
    assert q.meta.extra["quantization"]["scheme"].endswith("+rec10+" + str(len(q.meta.extra["quantization"]
                                                                             ["modules_8bit"])) + "x8bit")
    model, _ = q.load()
    mine = {n: m.dequantize().numpy() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    out = export_gguf(q, tmp_path / "q.gguf", progress=False)
    assert json.loads(sidecar(out).read_text())["medslm_integers"]["exact"]
    index = gb.RowIndex({n: (w,) for n, w in mine.items()})
    found = set()
    for t in gguf.GGUFReader(out).tensors:
        if t.tensor_type.name in ("Q4_0", "Q4_1", "Q8_0"):
            w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
            hit = index.find(w.astype(np.float32))
            assert hit is not None, t.name
            found.add(hit[0])
    assert found == set(mine)
