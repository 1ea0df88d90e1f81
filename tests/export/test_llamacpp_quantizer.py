"""llama.cpp's own quantizer as medslm drives it (the peers of medslm's integers): per-tensor types
(``--tensor-type``) and an importance matrix computed by medslm on calibration texts
(``--imatrix``), on tiny random models of Gemma 3 270M's shape in small and of Llama."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny

from medslm.errors import ConfigError
from medslm.export import gguf as ex
from medslm.export import llama_quantize as lq

pytest.importorskip("llama_cpp")


def _types(path):
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    d = tmp_path_factory.mktemp("llq")
    art = tiny.save_artifact("gemma3", d / "base", spm=True, wide=True)
    corpus = d / "calib.txt"
    corpus.write_text("\n\n".join(tiny.CORPUS))
    return art, corpus, d


def test_tensor_types_override_llama_cpps_mix(gemma, tmp_path):
    """Each pattern's tensors get its type (the first match wins), the rest llama.cpp's own Q4_0 mix;
    the sidecar records the overrides."""
    art, _, _ = gemma
    plain = ex.export_gguf(art, tmp_path / "plain.gguf", "q4_0", progress=False)
    over = {"ffn_(gate|up)": "q8_0", "ffn_": "q5_0", "token_embd": "q5_0"}
    out = ex.export_gguf(art, tmp_path / "mix.gguf", "q4_0", progress=False, tensor_types=over)
    want = {}
    for n, t in _types(plain).items():
        if "ffn_gate" in n or "ffn_up" in n:
            t = "Q8_0"
        elif "ffn_down" in n or n == "token_embd.weight":
            t = "Q5_0"
        want[n] = t
    got = _types(out)
    assert got == want
    assert {"Q4_0", "Q5_0", "Q8_0"} <= set(got.values())
    side = json.loads(ex.sidecar(out).read_text())
    assert side["tensor_types"] == over
    n_layers = sum(n.endswith("ffn_down.weight") for n in got)
    assert side["tensor_types_written"] == {"ffn_(gate|up)": {"q8_0": 2 * n_layers}, "ffn_": {"q5_0": n_layers},
                                            "token_embd": {"q5_0": 1}}


@pytest.mark.parametrize("items,msg", [
    (["ffn_down"], "PATTERN=TYPE"),
    (["ffn_down=q3_x"], "choose a type"),
    (["ffn_(down=q8_0"], "not a regular expression"),
    (["ffn_down=bf16"], "choose a type"),
])
def test_tensor_type_flags_are_checked(items, msg):
    with pytest.raises(ConfigError, match=msg):
        lq.parse_tensor_types(items)


@pytest.mark.parametrize("types,bad", [
    ({"ffn_dwn": "q8_0"}, "ffn_dwn"),  # a typo
    ({"attn_norm": "q8_0"}, "attn_norm"),  # only 1-D norms, which stay f32
    ({"ffn_": "q8_0", "ffn_down": "q5_0"}, "ffn_down"),  # every name taken by the pattern before
])
def test_a_pattern_that_decides_nothing_is_refused(gemma, tmp_path, types, bad):
    art, _, _ = gemma
    with pytest.raises(ConfigError, match=rf"--tensor-type {bad}=\w+: no weight matrix is decided.*blk\."):
        ex.export_gguf(art, tmp_path / "x.gguf", "q4_0", progress=False, tensor_types=types)
    assert not (tmp_path / "x.gguf").exists()


def test_every_override_type_is_one_llama_cpp_has():
    import llama_cpp

    assert all(hasattr(llama_cpp, "GGML_TYPE_" + t.upper()) for t in lq.OVERRIDE_TYPES)
    assert all(hasattr(llama_cpp, ftype) for ftype in lq.QUANT_TYPES.values())


def test_llama_cpp_options_refused_where_llama_cpp_does_not_quantize(gemma, tmp_path):
    art, corpus, d = gemma
    with pytest.raises(ConfigError, match="f16 is written by the converter"):
        ex.export_gguf(art, tmp_path / "x.gguf", "f16", progress=False, tensor_types={"ffn_down": "q8_0"})
    from medslm.methods import compress

    q = compress(art, {"method": "quantize", "bits": 4, "target": "gguf"}, d / "q")
    with pytest.raises(ConfigError, match="--imatrix applies.*medslm's own integers"):
        ex.export_gguf(q, tmp_path / "y.gguf", progress=False, imatrix=str(corpus))
    with pytest.raises(ConfigError, match="--imatrix imatrix.gguf: no such file \\(looked for /.*\\); give the .gguf or .dat file"):
        ex.export_gguf(art, tmp_path / "z.gguf", "q4_0", progress=False, imatrix="imatrix.gguf")
    with pytest.raises(ConfigError, match="--imatrix-samples 8: it counts the texts of --imatrix, which is not given"):
        ex.export_gguf(art, tmp_path / "z.gguf", "q4_0", progress=False, imatrix_samples=8)


def _hand_imatrix(art, corpus, module: str, samples: int = 8, seq_len: int = 256) -> np.ndarray:
    """The mean squared input per column of one linear layer, computed here with a plain hook."""
    from medslm.methods.calibration import calibration_batches, calibration_texts

    model, tok = art.load(dtype="float32")
    rows = []
    h = model.get_submodule(module).register_forward_pre_hook(lambda m, a: rows.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for b in calibration_batches(tok, calibration_texts(str(corpus), samples, 1234), seq_len):
            model(b)
    h.remove()
    x = torch.cat(rows)
    return (x * x).mean(0).numpy()


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_importance_matrix_is_llama_imatrix_by_gguf_name(arch, gemma, tmp_path):
    """One vector per linear layer, under its GGUF tensor name, as long as the tensor's rows: the
    mean of the squared input per column (as llama-imatrix); Gemma's tied head under token_embd."""
    import gguf

    from medslm.export.imatrix import importance_matrix

    _, corpus, _ = gemma
    art = tiny.save_artifact(arch, tmp_path / "base", spm=True, wide=arch == "gemma3")
    f16 = ex.export_gguf(art, tmp_path / "f16.gguf", "f16", progress=False)
    imat, info = importance_matrix(art, f16, str(corpus), samples=8)
    shapes = {t.name: int(t.shape[0]) for t in gguf.GGUFReader(f16).tensors}
    model, _ = art.load(dtype="float32")
    assert len(imat) == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert info["samples"] == 8 and info["tokens"] > 0
    for name, v in imat.items():
        assert v.shape == (shapes[name],) and v.dtype == np.float32 and (v >= 0).all(), name
    np.testing.assert_allclose(imat["blk.0.attn_q.weight"],
                               _hand_imatrix(art, corpus, "model.layers.0.self_attn.q_proj"), rtol=1e-5)
    np.testing.assert_allclose(imat["blk.1.ffn_down.weight"],
                               _hand_imatrix(art, corpus, "model.layers.1.mlp.down_proj"), rtol=1e-5)
    head = "token_embd.weight" if arch == "gemma3" else "output.weight"  # tied / untied
    np.testing.assert_allclose(imat[head], _hand_imatrix(art, corpus, "lm_head"), rtol=1e-5)


def test_imatrix_lowers_the_weighted_rounding_error(gemma, tmp_path):
    """llama.cpp's Q4_0 with medslm's importance matrix: the blocks change, and the rounding error
    weighted by the matrix (what it asks llama.cpp to spend its bits on) falls below plain Q4_0's."""
    import gguf

    from medslm.export.imatrix import importance_matrix

    art, corpus, _ = gemma
    f32 = ex.export_gguf(art, tmp_path / "f32.gguf", "f32", progress=False)
    plain = ex.export_gguf(art, tmp_path / "plain.gguf", "q4_0", progress=False)
    cal = ex.export_gguf(art, tmp_path / "cal.gguf", "q4_0", progress=False, imatrix=str(corpus),
                         imatrix_samples=8)
    side = json.loads(ex.sidecar(cal).read_text())
    assert side["imatrix"]["calibration"] == str(corpus) and side["imatrix"]["samples"] == 8
    imat, _ = importance_matrix(art, f32, str(corpus), samples=8)
    dense = {t.name: np.asarray(t.data, dtype=np.float32) for t in gguf.GGUFReader(f32).tensors}

    def errors(path):
        out = {}
        for t in gguf.GGUFReader(path).tensors:
            if t.tensor_type.name != "Q4_0":
                continue
            w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(dense[t.name].shape)
            out[t.name] = float((((w - dense[t.name]) ** 2) * imat[t.name]).sum())
        return out

    e_plain, e_cal = errors(plain), errors(cal)
    assert set(e_plain) == set(e_cal) and len(e_cal) >= 10
    assert sum(e_cal.values()) < 0.95 * sum(e_plain.values())
    assert sum(e_cal[n] < e_plain[n] for n in e_cal) >= 0.8 * len(e_cal)


def test_variant_takes_llama_cpp_options_only_where_llama_cpp_quantizes():
    from pydantic import ValidationError

    from medslm.recipe import Variant

    v = Variant(name="mix", backend="llamacpp", gguf="q4_0", gguf_types={"ffn_down": "Q8_0"},
                gguf_imatrix="pubmedqa,medquad")
    assert v.gguf_types == {"ffn_down": "q8_0"}
    for bad, msg in [({"gguf_types": {"ffn_down": "q8_0"}}, "backend: llamacpp"),
                     ({"backend": "llamacpp", "gguf": "f16", "gguf_imatrix": "medquad"},
                      "gguf_imatrix: applies where llama.cpp quantizes.*f16 is written by the converter"),
                     ({"backend": "llamacpp", "steps": [{"method": "quantize", "bits": 4, "target": "gguf"}],
                       "gguf_types": {"ffn_down": "q8_0"}}, "gguf_types: applies.*medslm's own integers"),
                     ({"backend": "llamacpp", "gguf": "q4_0", "gguf_imatrix_samples": 16},
                      "gguf_imatrix_samples: 16: it counts the texts of gguf_imatrix:"),
                     ({"backend": "llamacpp", "gguf": "q4_0", "gguf_imatrix": "x.imatrix.gguf"},
                      "gguf_imatrix: x.imatrix.gguf: no such file"),
                     ({"backend": "llamacpp", "gguf": "q4_0", "gguf_types": {"ffn_down": "q9"}}, "choose a type"),
                     ({"backend": "llamacpp", "gguf": "iq2_xs"}, "gguf_imatrix: CALIBRATION")]:
        with pytest.raises(ValidationError, match=msg):
            Variant(name="x", **bad)


def test_export_key_keeps_the_old_keys_without_options():
    assert ex.export_key("sha256:ab", "q4_0") == ex.export_key("sha256:ab", "q4_0", {})
    assert ex.export_key("sha256:ab", "q4_0") != ex.export_key("sha256:ab", "q4_0", {"tensor_types": {"a": "q8_0"}})
    # the first matching pattern wins, so the same overrides in another order are another file
    ab = {"tensor_types": {"ffn_(gate|up)": "q8_0", "ffn_": "q5_0"}}
    ba = {"tensor_types": {"ffn_": "q5_0", "ffn_(gate|up)": "q8_0"}}
    assert ex.export_key("sha256:ab", "q4_0", ab) != ex.export_key("sha256:ab", "q4_0", ba)


def test_i_quants_and_the_ones_that_need_an_importance_matrix(gemma, tmp_path):
    """IQ4_NL is written as asked; llama.cpp itself refuses IQ2_M without a matrix (so medslm checks
    it before converting, naming the fix), and makes it with one."""
    import gguf

    from medslm.errors import MedslmError

    art, corpus, _ = gemma
    out = ex.export_gguf(art, tmp_path / "nl.gguf", "iq4_nl", progress=False)
    assert "IQ4_NL" in set(_types(out).values())
    with pytest.raises(ConfigError, match="type iq2_m: .*add --imatrix CALIBRATION"):
        ex.export_gguf(art, tmp_path / "iq2.gguf", "iq2_m", progress=False)
    f16 = ex.export_gguf(art, tmp_path / "f16.gguf", "f16", progress=False)
    for t in lq.NEEDS_IMATRIX:  # what the check stands in front of: llama.cpp's own refusal
        with pytest.raises(MedslmError, match="could not quantize"):
            lq.quantize(f16, tmp_path / f"raw-{t}.gguf", t, 1)
    iq2 = ex.export_gguf(art, tmp_path / "iq2.gguf", "iq2_m", progress=False, imatrix=str(corpus), imatrix_samples=8)
    kinds = {t.tensor_type for t in gguf.GGUFReader(iq2).tensors}
    assert kinds & {gguf.GGMLQuantizationType.IQ2_S, gguf.GGMLQuantizationType.IQ2_XS,
                    gguf.GGMLQuantizationType.IQ3_S, gguf.GGMLQuantizationType.IQ4_NL}


# ------------------------------------------------------------------ llama-imatrix's own files
def _legacy_dat(path, values: dict, ncall: int, chunks: int | None = None, dataset: str | None = None):
    """A matrix in llama-imatrix's legacy binary format (common/imatrix-loader.cpp's reader): per
    entry the name, ncall, nval and the sums (the mean times ncall); optional trailer."""
    import struct

    b = struct.pack("<i", len(values))
    for name, v in values.items():
        enc = name.encode()
        sums = (np.asarray(v, dtype=np.float64) * ncall).astype("<f4")
        b += struct.pack("<i", len(enc)) + enc + struct.pack("<ii", ncall, sums.size) + sums.tobytes()
    if chunks is not None:
        b += struct.pack("<i", chunks)
        if dataset is not None:
            b += struct.pack("<i", len(dataset)) + dataset.encode()
    path.write_bytes(b)
    return path


def _q_tensors(path):
    import gguf

    return {t.name: bytes(np.asarray(t.data).tobytes()) for t in gguf.GGUFReader(path).tensors
            if t.tensor_type.name == "Q4_0"}


def test_a_llama_imatrix_file_quantizes_as_the_matrix_medslm_computes(gemma, tmp_path):
    """The same matrix, handed over as llama-imatrix's GGUF file, as its legacy .dat file, or
    computed from the calibration texts: byte-identical Q4_0 tensors (the counts are powers of two,
    so sums / counts gives the values back exactly); the sidecar records the file and its hash."""
    from medslm.export.imatrix import importance_matrix, read_imatrix_file, write_imatrix_file

    art, corpus, _ = gemma
    f16 = ex.export_gguf(art, tmp_path / "f16.gguf", "f16", progress=False)
    imat, _ = importance_matrix(art, f16, str(corpus), samples=8)
    g = write_imatrix_file(tmp_path / "m.imatrix.gguf", imat, 256, ["calib.txt"], 8, 256)
    d = _legacy_dat(tmp_path / "m.imatrix.dat", imat, 4, chunks=8, dataset="calib.txt")
    for f, fmt in ((g, "gguf"), (d, "legacy")):
        back, meta = read_imatrix_file(f, f16)
        assert back.keys() == imat.keys() and meta["format"] == fmt and meta["datasets"] == ["calib.txt"]
        assert meta["chunk_count"] == 8 and meta["unused_entries"] == []
        for n in imat:
            np.testing.assert_array_equal(back[n], imat[n])
    cal = _q_tensors(ex.export_gguf(art, tmp_path / "cal.gguf", "q4_0", progress=False, imatrix=str(corpus),
                                    imatrix_samples=8))
    plain = _q_tensors(ex.export_gguf(art, tmp_path / "plain.gguf", "q4_0", progress=False))
    assert cal != plain  # the matrix changes llama.cpp's blocks, so equality below says something
    renamed = tmp_path / "model.imatrix"  # the name many published matrices carry
    renamed.write_bytes(d.read_bytes())
    for f in (g, d, renamed):
        out = ex.export_gguf(art, tmp_path / f"{f.suffix[1:]}.gguf", "q4_0", progress=False, imatrix=str(f))
        assert _q_tensors(out) == cal
        side = json.loads(ex.sidecar(out).read_text())
        assert side["imatrix"]["file"] == str(f) and side["imatrix"]["sha256"].startswith("sha256:")


def test_save_imatrix_writes_llama_imatrix_gguf(gemma, tmp_path):
    """--save-imatrix: the matrix medslm computed, in llama-imatrix's GGUF layout (NAME.in_sum2,
    NAME.counts = tokens, the imatrix.* keys llama-quantize requires); read back it is that matrix."""
    import gguf

    from medslm.export.imatrix import importance_matrix, read_imatrix_file

    art, corpus, _ = gemma
    saved = tmp_path / "sub" / "med.imatrix.gguf"
    out = ex.export_gguf(art, tmp_path / "cal.gguf", "q4_0", progress=False, imatrix=str(corpus),
                         imatrix_samples=8, save_imatrix=saved)
    r = gguf.GGUFReader(saved)
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.datasets"].contents() == [str(corpus)]
    assert r.fields["imatrix.chunk_count"].contents() == 8 and r.fields["imatrix.chunk_size"].contents() == 256
    side = json.loads(ex.sidecar(out).read_text())["imatrix"]
    counts = {t.name: float(np.asarray(t.data).reshape(-1)[0]) for t in r.tensors if t.name.endswith(".counts")}
    assert set(counts.values()) == {float(side["tokens"])} and side["saved_as"] == str(saved)
    imat, _ = importance_matrix(art, tmp_path / "cal.gguf", str(corpus), samples=8)
    back, _ = read_imatrix_file(saved, tmp_path / "cal.gguf")
    assert back.keys() == imat.keys()
    for n in imat:
        np.testing.assert_allclose(back[n], imat[n], rtol=1e-6)
    shapes = {t.name.rsplit(".", 1)[1]: [int(x) for x in t.shape] for t in r.tensors}
    assert shapes["in_sum2"][1:] == [1] and shapes["counts"] == [1, 1]  # GGML order: [columns, matrices]
    from medslm.outputs import OutputError

    with pytest.raises(OutputError, match="--save-imatrix .* already exists; pass --overwrite"):
        ex.export_gguf(art, tmp_path / "again.gguf", "q4_0", progress=False, imatrix=str(corpus),
                       imatrix_samples=8, save_imatrix=saved)
    before = saved.stat().st_mtime_ns
    ex.export_gguf(art, tmp_path / "cal.gguf", "q4_0", progress=False, imatrix=str(corpus), imatrix_samples=4,
                   save_imatrix=saved, overwrite=True)  # medslm's own matrix file: --overwrite replaces it
    assert saved.stat().st_mtime_ns != before and read_imatrix_file(saved, tmp_path / "cal.gguf")[0].keys() == imat.keys()
    with pytest.raises(OutputError, match="--save-imatrix .* the input"):  # never into the model's folder
        ex.export_gguf(art, tmp_path / "in.gguf", "q4_0", progress=False, imatrix=str(corpus), imatrix_samples=4,
                       save_imatrix=art.path / "m.imatrix.gguf")
    assert not (art.path / "m.imatrix.gguf").exists() and not (tmp_path / "in.gguf").exists()
    plain = tmp_path / "plain.gguf"  # a GGUF medslm did not write as a matrix is not replaced
    plain.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(OutputError, match="was not written by medslm"):
        ex.export_gguf(art, tmp_path / "p.gguf", "q4_0", progress=False, imatrix=str(corpus), imatrix_samples=4,
                       save_imatrix=plain, overwrite=True)
    with pytest.raises(ConfigError, match="--save-imatrix .*give those \\(not a matrix file\\)"):
        ex.export_gguf(art, tmp_path / "again.gguf", "q4_0", progress=False, imatrix=str(saved),
                       save_imatrix=tmp_path / "x.gguf")


def test_bad_imatrix_files_are_refused_by_name(gemma, tmp_path):
    from medslm.export.imatrix import importance_matrix, write_imatrix_file

    art, corpus, _ = gemma
    f16 = ex.export_gguf(art, tmp_path / "f16.gguf", "f16", progress=False)
    imat, _ = importance_matrix(art, f16, str(corpus), samples=4)
    name = next(n for n in imat if n.startswith("blk.0.ffn_down"))

    def refused(f, msg, **kw):
        with pytest.raises(ConfigError, match=msg):
            ex.export_gguf(art, tmp_path / "x.gguf", "q4_0", progress=False, imatrix=str(f), **kw)
        assert not (tmp_path / "x.gguf").exists()

    cols = imat[name].size
    wide = write_imatrix_file(tmp_path / "wide.gguf", {**imat, name: np.ones(7)}, 16, ["x"], 1, 256)
    refused(wide, f"entry {name} holds 7 columns x 1 matrices, but the tensor here is {cols} columns x 1 "
                  "matrices; the matrix was computed for another model")
    # two experts' rows for a dense tensor: in GGUF by shape, in the legacy file by the count of values
    import gguf

    w = gguf.GGUFWriter(tmp_path / "moe.gguf", arch="imatrix", use_temp_file=False)
    for k, v in (("datasets", ["x"]), ("chunk_count", 1), ("chunk_size", 256)):
        (w.add_array if k == "datasets" else w.add_uint32)(f"imatrix.{k}", v)
    w.add_tensor(f"{name}.in_sum2", np.ones((2, cols), np.float32))  # numpy (matrices, columns)
    w.add_tensor(f"{name}.counts", np.full((2, 1), 8, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    refused(tmp_path / "moe.gguf", f"entry {name} holds {cols} columns x 2 matrices, but the tensor here is "
                                   f"{cols} columns x 1 matrices")
    refused(_legacy_dat(tmp_path / "moe.dat", {name: np.ones(2 * cols)}, 4),
            f"entry {name} holds {2 * cols} values, but the tensor here is {cols} columns x 1 matrices")
    other = write_imatrix_file(tmp_path / "other.gguf", {"blk.99.attn_q.weight": np.ones(8)}, 16, ["x"], 1, 256)
    refused(other, "none of its 1 entries \\(e.g. blk.99.attn_q.weight\\) names a weight of this model")
    dat = _legacy_dat(tmp_path / "cut.dat", imat, 4)
    dat.write_bytes(dat.read_bytes()[:-10])
    refused(dat, "cut.dat: the file ends inside entry .*'s values")
    refused(tmp_path / "m.imatrix.gguf", "no such file \\(looked for /")
    refused(write_imatrix_file(tmp_path / "ok.gguf", imat, 16, ["x"], 1, 256), "--imatrix-samples 8: it counts "
            "calibration texts, but --imatrix .*ok.gguf is a matrix llama-imatrix already computed", imatrix_samples=8)
    # a GGUF without the keys llama-quantize requires, and a model file instead of a matrix
    w = gguf.GGUFWriter(tmp_path / "nokeys.gguf", arch="imatrix", use_temp_file=False)
    w.add_tensor(f"{name}.in_sum2", np.ones((1, imat[name].size), np.float32))
    w.add_tensor(f"{name}.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    refused(tmp_path / "nokeys.gguf", "no imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size")
    refused(f16, "no NAME.in_sum2 / NAME.counts tensors; is it a model")


def test_an_imatrix_file_is_cached_by_content(gemma, tmp_path, monkeypatch):
    """A recipe's export with a matrix file: the same bytes elsewhere are a cache hit, a changed file
    is a new export."""
    from medslm.export.imatrix import importance_matrix, write_imatrix_file

    monkeypatch.setenv("MEDSLM_CACHE", str(tmp_path / "cache"))
    art, corpus, _ = gemma
    f16 = ex.export_gguf(art, tmp_path / "f16.gguf", "f16", progress=False)
    imat, _ = importance_matrix(art, f16, str(corpus), samples=4)
    a = write_imatrix_file(tmp_path / "a.gguf", imat, 16, ["x"], 1, 256)
    logs = []
    first = ex.cached_export(art, "q4_0", "v", logs.append, imatrix=str(a))
    (tmp_path / "moved").mkdir()
    b = (tmp_path / "moved" / "b.gguf")
    b.write_bytes(a.read_bytes())
    assert ex.cached_export(art, "q4_0", "v", logs.append, imatrix=str(b)) == first and "cached" in logs[-1]
    write_imatrix_file(tmp_path / "c.gguf", {k: v * 3 + 1 for k, v in imat.items()}, 16, ["x"], 1, 256)
    other = ex.cached_export(art, "q4_0", "v", logs.append, imatrix=str(tmp_path / "c.gguf"))
    assert other != first and "cached" not in logs[-1]


def test_a_hand_built_llama_imatrix_gguf_reads_as_sums_over_counts(gemma, tmp_path):
    """A file laid out as llama-imatrix writes it (built here without medslm's writer): in_sum2
    [columns, 1], counts [1, 1] = 3 tokens, plus an entry for a tensor this model lacks and one with
    a zero count. The values are in_sum2 / 3 (and 1 where the count is 0, as llama-quantize does);
    the unknown entry is listed, not used."""
    import gguf

    from medslm.export.imatrix import read_imatrix_file

    art, _, _ = gemma
    f16 = ex.export_gguf(art, tmp_path / "f16.gguf", "f16", progress=False)
    widths = {t.name: int(t.shape[0]) for t in gguf.GGUFReader(f16).tensors if len(t.shape) == 2}
    a, b = "blk.0.attn_q.weight", "blk.1.ffn_up.weight"
    rng = np.random.default_rng(0)
    sums = {a: rng.random(widths[a]).astype(np.float32) * 5, b: rng.random(widths[b]).astype(np.float32)}
    w = gguf.GGUFWriter(tmp_path / "hand.gguf", arch="llama", use_temp_file=False)
    w.add_array("imatrix.datasets", ["wiki.train.raw", "med.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, count in ((a, 3.0), (b, 0.0), ("blk.7.attn_k.weight", 3.0)):
        v = sums.get(name, np.ones(16, np.float32))
        w.add_tensor(f"{name}.in_sum2", v.reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.array([[count]], np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    vals, meta = read_imatrix_file(tmp_path / "hand.gguf", f16)
    np.testing.assert_allclose(vals[a], sums[a].astype(np.float64) / 3, rtol=1e-7)
    assert (vals[b] == 1).all() and vals.keys() == {a, b}
    assert meta["unused_entries"] == ["blk.7.attn_k.weight"] and meta["datasets"] == ["wiki.train.raw", "med.txt"]
    assert meta["chunk_count"] == 3 and meta["chunk_size"] == 512
