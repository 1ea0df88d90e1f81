"""bench/delta_kept.py: the share of a fine-tune's weight change a GGUF file keeps."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "delta_kept.py"
    spec = importlib.util.spec_from_file_location("delta_kept", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_file_of_the_merged_weights_keeps_the_delta_and_one_of_the_base_erases_it(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {f"model.layers.0.mlp.{n}.weight": torch.randn(64, 64, generator=g) for n in ("up_proj", "down_proj")}
    merged = {k: v + 0.01 * torch.randn(64, 64, generator=g) for k, v in base.items()}
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    # up: the merged weights in f32 (all kept); down: the base's weights (the fine-tune erased)
    w.add_tensor("blk.0.ffn_up.weight", merged["model.layers.0.mlp.up_proj.weight"].numpy())
    w.add_tensor("blk.0.ffn_down.weight", base["model.layers.0.mlp.down_proj.weight"].numpy().astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = _bench().kept(base, merged, tmp_path / "m.gguf")
    assert r["F32"]["delta_kept"] == pytest.approx(1.0, abs=1e-9) and r["F32"]["error_vs_delta"] < 1e-12
    # f16 rounding of the base: its error is unrelated to the delta, so almost none of it is kept
    assert abs(r["F16"]["delta_kept"]) < 0.05 and r["F16"]["error_vs_delta"] == pytest.approx(1.0, abs=0.05)
    assert r["F32"]["weights"] == r["F16"]["weights"] == 64 * 64
