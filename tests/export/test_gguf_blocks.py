"""medslm's integers as GGUF blocks: the block layouts against the gguf package's own dequantizer,
the refusals, finding permuted rows; on tiny random models of each architecture llama.cpp converts
(and a trimmed vocabulary), every exported tensor reads back as medslm's weight and llama.cpp's
scores follow the hf backend's; and (Gemma, llama.cpp) an int4 + int8 model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny

from medslm.errors import ConfigError, MedslmError
from medslm.export import gguf_blocks as gb


@pytest.mark.parametrize("bits", [4, 8])
def test_blocks_dequantize_to_medslm_weights_exactly(bits):
    import gguf

    rng = np.random.default_rng(bits)
    lo, hi = (-8, 7) if bits == 4 else (-128, 127)
    codes = rng.integers(lo, hi + 1, size=(6, 96)).astype(np.int8)
    codes[0, :32] = lo  # the ends of the range
    codes[1, :32] = hi
    scales = rng.uniform(1e-3, 0.1, size=(6, 3)).astype(np.float16)
    want = codes.astype(np.float32) * np.repeat(scales.astype(np.float32), 32, axis=1)
    kind = gguf.GGMLQuantizationType.Q4_0 if bits == 4 else gguf.GGMLQuantizationType.Q8_0
    blocks = (gb.q4_0_blocks if bits == 4 else gb.q8_0_blocks)(codes, scales)
    assert blocks.shape == (6, 3 * gguf.GGML_QUANT_SIZES[kind][1])
    assert np.array_equal(gguf.quants.dequantize(blocks, kind).reshape(6, 96), want)


def test_q4_1_blocks_hold_scales_offsets_and_codes():
    """Q4_1: w = d * q + m, q in 0..15; medslm's offset is -scale * zero rounded to fp16."""
    import gguf
    import torch

    from medslm.models.quantized import offset

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 16, size=(5, 64)).astype(np.uint8)
    codes[0, :32], codes[1, :32] = 0, 15
    scales = rng.uniform(1e-3, 0.1, size=(5, 2)).astype(np.float16)
    zeros = rng.integers(0, 16, size=(5, 2)).astype(np.uint8)
    mins = offset(torch.from_numpy(scales), torch.from_numpy(zeros)).numpy()
    want = codes.astype(np.float32) * np.repeat(scales.astype(np.float32), 32, 1) + np.repeat(mins, 32, 1)
    blocks = gb.q4_1_blocks(codes, scales, mins.astype(np.float16))
    Q = gguf.GGMLQuantizationType.Q4_1
    assert blocks.shape == (5, 2 * gguf.GGML_QUANT_SIZES[Q][1])
    assert np.array_equal(gguf.quants.dequantize(blocks, Q).reshape(5, 64), want)


def test_row_index_finds_permuted_rows():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 64)).astype(np.float32)
    other = rng.normal(size=(8, 64)).astype(np.float32)
    ix = gb.RowIndex({"a": (w, "q4_0", None, None, None), "b": (other, "q4_0", None, None, None)})
    p = np.array([1, 0, 3, 2, 5, 4, 7, 6])
    name, got = ix.find(w[p])
    assert name == "a" and np.array_equal(got, p)
    assert ix.find(rng.normal(size=(8, 64)).astype(np.float32)) is None


class _Art:
    path = "runs/q"

    def __init__(self, **q):
        self.meta = type("M", (), {"extra": {"quantization": {"scheme": "x", "bits": 4, "group_size": 32,
                                                               "symmetric": True, **q}}})()


@pytest.mark.parametrize("q,qtype,msg", [
    ({}, "q5_k_m", r"export without requantization as q4_0 / q4_1 / q8_0 / q4_k_m only \(this one as q4_0\)"),
    ({}, "q4_k_m", r"is not on the Q4_K_M grid .* `medslm quantize --target q4_k_m`, or export this one as q4_0"),
    ({"symmetric": False}, "q4_0", "asymmetric, so its blocks are q4_1: export it with --type q4_1"),
    ({"group_size": 128}, "q4_0", "groups of 128, GGUF blocks hold 32 weights: quantize .* --target gguf"),
    ({"bits": 8}, "q4_0", "export it with --type q8_0"),
    ({"bits": 8, "symmetric": False}, "q8_0", r"asymmetric 8-bit; GGUF's 8-bit block \(Q8_0\) is symmetric"),
])
def test_integers_off_the_grid_are_refused_with_the_fix(q, qtype, msg):
    with pytest.raises(ConfigError, match=msg):
        gb.check_exportable(_Art(**q), qtype)


@pytest.mark.parametrize("cfg,msg", [
    ({"target": "gguf", "group_size": 64}, "group_size=64 with target=gguf: .* hold 32 weights; use group_size 32"),
    ({"target": "gguf", "bits": 8, "symmetric": False}, r"Q8_0\) is symmetric; drop --asymmetric"),
])
def test_gguf_target_refuses_what_no_block_holds(cfg, msg):
    from medslm.methods.base import parse_config

    with pytest.raises(Exception, match=msg):
        parse_config({"method": "quantize", **cfg})


def test_gguf_target_defaults_to_blocks_of_32():
    from medslm.methods.base import parse_config

    assert parse_config({"method": "quantize", "target": "gguf"}).group_size == 32
    assert parse_config({"method": "quantize"}).group_size == 32  # every default exports to GGUF


# llama.cpp's converter reads these architectures with a SentencePiece vocabulary; GPT-2's needs a
# known pre-tokenizer (a tiny random vocabulary is not one) and BioGPT has no llama.cpp port
GGUF_ARCHS = ["gemma3", "llama", "mistral"]
FORMATS = {  # exported type -> quantize config
    "q4_0": {"bits": 4, "target": "gguf", "bits8": ("*.v_proj",), "embeddings": "int4"},
    "q4_1": {"bits": 4, "target": "gguf", "symmetric": False, "clip_search": True, "embeddings": "int8"},
    "q8_0": {"bits": 8, "target": "gguf"},
}


def _export_case(tmp_path, arch, qtype, trim=False):
    from medslm.export.gguf import export_gguf, sidecar
    from medslm.methods import compress

    art = tiny.save_artifact(arch, tmp_path / "base", spm=True)
    if trim:
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("\n\n".join(tiny.CORPUS[:4]))
        art = compress(art, {"method": "trim", "corpus": str(corpus)}, tmp_path / "trim")
    cfg = dict(FORMATS[qtype])
    if arch != "gemma3" and cfg.get("embeddings"):  # Llama's head is not tied: its embedding stays float
        cfg["embeddings"] = "keep"
    q = compress(art, {"method": "quantize", **cfg}, tmp_path / "q")
    out = export_gguf(q, tmp_path / "q.gguf", progress=False)
    return q, out, json.loads(sidecar(out).read_text())


@pytest.mark.parametrize("qtype", list(FORMATS))
@pytest.mark.parametrize("arch", GGUF_ARCHS)
def test_tiny_exports_hold_medslm_weights_exactly(tmp_path, arch, qtype):
    """Each tensor medslm quantized, read back and dequantized by the gguf package, equals medslm's
    dequantized weight (found by its rows: converters permute Llama's q/k rows); llama.cpp's
    log-likelihoods on the export follow the hf backend on the quantized artifact."""
    pytest.importorskip("llama_cpp")
    import gguf

    from medslm.models.quantized import QuantEmbedding, QuantLinear

    q, out, side = _export_case(tmp_path, arch, qtype)
    model, tok = q.load()
    mine = {n: (m.dequantize() if isinstance(m, QuantLinear) else m.rows(slice(None))).numpy()
            for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))}
    assert side["type"] == qtype and side["medslm_integers"]["exact"]
    assert side["medslm_integers"]["tensors"] == len(mine) and side["medslm_integers"]["requantized_to_q8_0"] == []
    index = gb.RowIndex({n: (w,) for n, w in mine.items()})
    Q = gguf.GGMLQuantizationType
    found, kinds = set(), {}
    reader = gguf.GGUFReader(out)
    for t in reader.tensors:
        if t.tensor_type not in (Q.Q4_0, Q.Q4_1, Q.Q8_0):
            continue
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        hit = index.find(w.astype(np.float32))
        assert hit is not None, t.name
        found.add(hit[0])
        kinds[t.tensor_type.name] = kinds.get(t.tensor_type.name, 0) + 1
    assert found == set(mine)
    assert qtype.upper() in kinds and set(kinds) <= {qtype.upper(), "Q8_0"}
    from medslm.backends.llamacpp import LlamaCppBackend

    # the file records no parameter count; the backend reports llama.cpp's count of its weights
    assert "general.parameter_count" not in reader.fields
    n = sum(int(t.n_elements) for t in reader.tensors)
    assert n > 0 and LlamaCppBackend(str(out), threads=1).describe()["parameters"] == n
    if arch == "gemma3":  # the blocks carry the model's own sliding-window layers (added in the same write)
        types = json.loads((q.path / "config.json").read_text())["layer_types"]
        field = reader.fields["gemma3.attention.sliding_window_pattern"]
        assert [bool(v) for v in field.contents()] == [t == "sliding_attention" for t in types]
    if arch == "gemma3":  # Llama's converter leaves SentencePiece's space prefix on for a vocabulary
        tiny.llamacpp_follows_hf(q, out, tok)  # without one (llama.cpp then adds a "▁" the hf tokenizer does not)


def test_trimmed_vocabulary_exports_exactly(tmp_path):
    pytest.importorskip("llama_cpp")
    q, out, side = _export_case(tmp_path, "gemma3", "q4_0", trim=True)
    model, tok = q.load()
    assert model.get_input_embeddings().num_embeddings < len(tiny.spm_tokenizer())
    assert side["medslm_integers"]["exact"] and side["medslm_integers"]["types"]["q4_0"] >= 1
    tiny.llamacpp_follows_hf(q, out, tok)


def test_asymmetric_offsets_off_fp16_are_refused(tmp_path):
    """An asymmetric artifact quantized for medslm (integer zero points): its -scale * zero is not
    an fp16 number for some groups, so it is not exactly Q4_1; the error names --target gguf."""
    pytest.importorskip("llama_cpp")
    from medslm.export.gguf import export_gguf
    from medslm.methods import compress

    art = tiny.save_artifact("llama", tmp_path / "base", spm=True)
    q = compress(art, {"method": "quantize", "bits": 4, "group_size": 32, "symmetric": False}, tmp_path / "q")
    with pytest.raises(MedslmError, match="--target gguf --asymmetric"):
        export_gguf(q, tmp_path / "q.gguf", progress=False)
    assert not (tmp_path / "q.gguf").exists()


@pytest.mark.integration
def test_gemma_int4_with_int8_modules_exports_its_own_integers(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("llama_cpp")
    import gguf

    from medslm.backends.hf import HFBackend
    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.export.gguf import export_gguf, sidecar
    from medslm.methods import compress
    from medslm.models.quantized import QuantLinear
    from medslm.tasks import get_task

    monkeypatch.setenv("MEDSLM_DATA_DIR", str(data_dir))
    q = compress("gemma3-270m", {"method": "quantize", "bits": 4, "group_size": 32, "bits8": ("*.v_proj",),
                                 "embeddings": "keep"}, tmp_path / "q4")
    out = export_gguf(q, tmp_path / "q4.gguf", progress=False)
    side = json.loads(sidecar(out).read_text())
    assert side["type"] == "q4_0" and side["medslm_integers"] == {
        "tensors": 126, "types": {"q4_0": 108, "q8_0": 18}, "exact": True, "requantized_to_q8_0": []}
    model, _ = q.load()
    mine = {n: m.dequantize().numpy() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    index = gb.RowIndex({n: (w,) for n, w in mine.items()})
    kinds, found = {}, set()
    for t in gguf.GGUFReader(out).tensors:  # read back independently of the exporter's own check
        if t.tensor_type not in (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q8_0):
            continue
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        hit = index.find(w.astype(np.float32))
        assert hit is not None, t.name  # the exact values of one of medslm's weights
        found.add(hit[0])
        kinds[t.tensor_type.name] = kinds.get(t.tensor_type.name, 0) + 1
    assert found == set(mine) and kinds == {"Q4_0": 108, "Q8_0": 18}
    t = get_task("pubmedqa")
    reqs = [r for e in t.examples("dev@50")[:6] for r in t.requests(e)]
    a = LlamaCppBackend(str(out), threads=1, shared_context=False).loglikelihood(reqs)
    b = HFBackend(str(q.path), threads=1, shared_context=False).loglikelihood(reqs)
    # llama.cpp multiplies Q4_0 weights with 8-bit-quantized activations and keeps the embedding in
    # f16: close to the hf backend on the same weights, not equal
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 0.6
    pick = lambda s, i: max(range(3), key=lambda j: s[3 * i + j][0])  # noqa: E731
    assert sum(pick(a, i) == pick(b, i) for i in range(6)) >= 5


@pytest.mark.parametrize("float_type", ["f16", "q8_0"])
def test_write_blocks_replaces_medslm_tensors_and_keeps_the_rest(tmp_path, float_type):
    """On a small GGUF as the converter writes it (f32): the tensor holding a quantized weight, in a
    permuted row order, becomes Q4_0 blocks of medslm's integers; a float matrix becomes f16 or
    (q8_0) llama.cpp's Q8_0; a vector stays f32; the metadata is carried over."""
    import gguf

    rng = np.random.default_rng(1)
    codes = rng.integers(-8, 8, size=(4, 64)).astype(np.int8)
    scales = rng.uniform(0.01, 0.1, size=(4, 2)).astype(np.float16)
    w = codes.astype(np.float32) * np.repeat(scales.astype(np.float32), 32, axis=1)
    emb = rng.normal(size=(8, 64)).astype(np.float32)
    norm = rng.normal(size=(64,)).astype(np.float32)
    src = tmp_path / "f32.gguf"
    wr = gguf.GGUFWriter(src, "llama")
    wr.add_block_count(1)
    wr.add_string("medslm.test", "kept")
    wr.add_tensor("blk.0.attn_q.weight", w[[2, 0, 3, 1]])  # the converter permuted the rows
    wr.add_tensor("token_embd.weight", emb)
    wr.add_tensor("output_norm.weight", norm)
    wr.write_header_to_file(), wr.write_kv_data_to_file(), wr.write_tensors_to_file(), wr.close()
    out = tmp_path / "q.gguf"
    info = gb.write_blocks(src, out, {"model.layers.0.self_attn.q_proj": (w, "q4_0", (codes, scales))},
                           "q4_0", float_type)
    assert info["medslm_integers"]["tensors"] == 1 and info["medslm_integers"]["exact"]
    assert info["medslm_integers"]["requantized_to_q8_0"] == (["token_embd.weight"] if float_type == "q8_0" else [])
    r = gguf.GGUFReader(out)
    t = {x.name: x for x in r.tensors}
    Q = gguf.GGMLQuantizationType
    assert t["blk.0.attn_q.weight"].tensor_type == Q.Q4_0
    got = gguf.quants.dequantize(np.asarray(t["blk.0.attn_q.weight"].data), Q.Q4_0).reshape(4, 64)
    assert np.array_equal(got, w[[2, 0, 3, 1]])
    assert t["token_embd.weight"].tensor_type == (Q.Q8_0 if float_type == "q8_0" else Q.F16)
    assert t["output_norm.weight"].tensor_type == Q.F32
    assert str(r.fields["medslm.test"].contents()) == "kept"
    assert int(r.fields[gguf.Keys.General.FILE_TYPE].contents()) == gguf.LlamaFileType.MOSTLY_Q4_0
