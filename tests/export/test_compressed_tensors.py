"""The compressed-tensors export: medslm's integers packed as compressed-tensors' pack-quantized
layers, which transformers loads (CompressedTensorsHfQuantizer) with logits equal to medslm's own
quantized model; asymmetric and unquantized artifacts refused with the fix; fewer bytes on disk."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny

pytest.importorskip("compressed_tensors")

from medslm.errors import ConfigError, MedslmError  # noqa: E402
from medslm.export.compressed_tensors import export_compressed_tensors  # noqa: E402
from medslm.methods import compress  # noqa: E402

IDS = torch.tensor([[1, 5, 9, 14, 3, 27, 8, 11]])


@pytest.mark.parametrize("arch", [a for a in tiny.ARCHS if a != "gpt2"])  # gpt2: Conv1D, refused below
def test_transformers_loads_the_export_with_medslm_logits(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    base = tiny.save_artifact(arch, tmp_path / "base")
    cfg = {"method": "quantize", "bits": 4, "algorithm": "rtn", "clip_search": True}
    if arch == "gemma3":  # mixed precision and the int8 table too
        cfg |= {"bits8": ["*.v_proj"], "embeddings": "int8"}
    q = compress(base, cfg, tmp_path / "q")
    out = export_compressed_tensors(q, tmp_path / "ct", progress=False)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    widths = sorted(g["weights"]["num_bits"] for g in qc["config_groups"].values())
    assert widths == ([4, 8] if arch == "gemma3" else [4])
    side = json.loads((out / "medslm-export.json").read_text())
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert "compressed-tensors" in card.data.tags and "quantize" in card.data.tags and "Not a medical device" in card.text
    assert side["exact"] is True and side["source_hash"] == q.hash
    loaded = AutoModelForCausalLM.from_pretrained(out)
    mine, _ = q.load(dtype="float32")
    ids = IDS % loaded.config.vocab_size
    with torch.no_grad():
        a, b = loaded(ids).logits, mine(ids).logits
    assert torch.equal(a, b), (a - b).abs().max()
    if arch == "llama":  # and medslm's own hf backend evaluates the directory as it does the artifact
        from medslm.backends.hf import HFBackend
        from medslm.requests import LoglikelihoodRequest

        reqs = [LoglikelihoodRequest(tiny.CORPUS[0][:30], tiny.CORPUS[0][30:50])]
        assert HFBackend(str(out), threads=1).loglikelihood(reqs) == HFBackend(str(q.path), threads=1).loglikelihood(reqs)


def test_fewer_bytes_and_refusals(tmp_path):
    base = tiny.save_artifact("llama", tmp_path / "base")
    q = compress(base, {"method": "quantize", "bits": 4}, tmp_path / "q")
    out = export_compressed_tensors(q, tmp_path / "ct", progress=False)
    linear = sum(m.weight.numel() for n, m in base.load()[0].named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    dense = sum(f.stat().st_size for f in base.path.glob("*.safetensors"))
    packed = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert packed < dense - linear * 4 * 0.8  # the Linear weights went from 32 to about 5 bits
    with pytest.raises(MedslmError, match="exists; medslm never overwrites"):
        export_compressed_tensors(q, out, progress=False)
    with pytest.raises(ConfigError, match="not quantized by medslm"):
        export_compressed_tensors(base, tmp_path / "dense", progress=False)
    sparse = compress(base, {"method": "prune", "algorithm": "magnitude", "sparsity": 0.5}, tmp_path / "w50")
    with pytest.raises(ConfigError, match=r"pruned to 50% sparsity.*no sparse compressor.*quantize it"):
        export_compressed_tensors(sparse, tmp_path / "w50-ct", progress=False)
    assert not (tmp_path / "w50-ct").exists()
    asym = compress(base, {"method": "quantize", "bits": 4, "symmetric": False}, tmp_path / "asym")
    with pytest.raises(ConfigError, match="asymmetric .*#1618.* quantize symmetric"):
        export_compressed_tensors(asym, tmp_path / "asym-ct", progress=False)
    assert not (tmp_path / "asym-ct").exists() and not (tmp_path / "asym-ct.partial").exists()
    g = compress(tiny.save_artifact("gpt2", tmp_path / "gpt2"), {"method": "quantize", "bits": 4}, tmp_path / "g")
    with pytest.raises(ConfigError, match="is a Conv1D, not an nn.Linear.*GGUF instead"):
        export_compressed_tensors(g, tmp_path / "g-ct", progress=False)
