"""GGUF export: fetching llama.cpp's converter, the SentencePiece vocabulary, and llama.cpp vs hf."""

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading

import pytest
from helpers import tiny

from medslm.errors import MedslmError
from medslm.export import converter as cv
from medslm.export import gguf as ex


def fake_sdist(version: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in {f"llama_cpp_python-{version}/vendor/llama.cpp/convert_hf_to_gguf.py": b"print('hi')\n",
                           f"llama_cpp_python-{version}/vendor/llama.cpp/conversion/__init__.py": b"",
                           f"llama_cpp_python-{version}/vendor/llama.cpp/gguf-py/gguf/__init__.py": b"",
                           f"llama_cpp_python-{version}/vendor/llama.cpp/ggml/src/big.c": b"x" * 100,
                           f"llama_cpp_python-{version}/llama_cpp/__init__.py": b""}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture
def index(tmp_path):
    """A PEP 503 simple index on 127.0.0.1 listing one sdist (with a sha256 that may be wrong)."""
    files = {}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    def publish(version: str, sha: str | None = None):
        data = fake_sdist(version)
        files[f"/packages/llama_cpp_python-{version}.tar.gz"] = data
        digest = sha or hashlib.sha256(data).hexdigest()
        files["/simple/llama-cpp-python/"] = (
            f'<html><body><a href="{base}/packages/llama_cpp_python-0.0.1.tar.gz#sha256={"0" * 64}">old</a>'
            f'<a href="../../packages/llama_cpp_python-{version}.tar.gz#sha256={digest}">x</a></body></html>').encode()
        return base + "/simple"

    yield publish
    srv.shutdown()


def test_converter_fetched_verified_and_trimmed(index, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSLM_PYPI_SIMPLE", index("9.9.9"))
    dest = tmp_path / "conv"
    cv.fetch_converter("9.9.9", dest, progress=False)
    assert (dest / "convert_hf_to_gguf.py").read_text() == "print('hi')\n"
    assert (dest / "conversion" / "__init__.py").is_file() and (dest / "gguf-py" / "gguf" / "__init__.py").is_file()
    assert not (dest / "ggml").exists()  # only the converter's files are kept
    assert json.loads((dest / "SOURCE.json").read_text())["version"] == "9.9.9"


def test_converter_with_wrong_checksum_is_refused(index, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSLM_PYPI_SIMPLE", index("9.9.9", sha="1" * 64))
    with pytest.raises(MedslmError, match="differs from the index"):
        cv.fetch_converter("9.9.9", tmp_path / "conv", progress=False)
    assert not (tmp_path / "conv").exists()
    monkeypatch.setenv("MEDSLM_PYPI_SIMPLE", index("9.9.9"))
    with pytest.raises(MedslmError, match="lists no llama_cpp_python-1.2.3.tar.gz.*MEDSLM_LLAMACPP_DIR"):
        cv.fetch_converter("1.2.3", tmp_path / "conv", progress=False)


def test_llamacpp_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSLM_LLAMACPP_DIR", str(tmp_path))
    with pytest.raises(MedslmError, match="no convert_hf_to_gguf.py"):
        cv.converter_dir()
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    assert cv.converter_dir() == tmp_path


def test_sentencepiece_vocabulary_tokenizes_like_the_hf_tokenizer(tmp_path):
    import sentencepiece as spm

    tok = tiny.spm_tokenizer()
    tok.save_pretrained(tmp_path)
    tj = json.loads((tmp_path / "tokenizer.json").read_text())
    ids = {"unk": tok.unk_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id}
    sp = spm.SentencePieceProcessor(model_proto=cv.spm_from_tokenizer_json(tj, ids))
    assert sp.get_piece_size() == len(tok)
    assert sp.is_control(tok.bos_token_id) and sp.is_unknown(tok.unk_token_id) and sp.is_byte(4 + 10)
    for text in tiny.CORPUS[:7] + ["Metformin 500 mg twice daily; HbA1c fell to 6.9%.", "Ünï 日本 🙂 x"]:
        assert sp.encode(text) == tok(text, add_special_tokens=False).input_ids, text


def test_quantized_artifacts_are_refused_with_the_fix(tmp_path):
    from medslm.methods import compress

    base = tiny.save_artifact("gemma3", tmp_path / "base")
    q = compress(base, {"method": "quantize", "bits": 8, "group_size": 16}, tmp_path / "q")
    with pytest.raises(MedslmError, match="export the dense model before `quantize`"):
        ex.export_gguf(q, tmp_path / "q.gguf", "q4_k_m")
    with pytest.raises(MedslmError, match="choose one of"):
        ex.export_gguf(base, tmp_path / "b.gguf", "q3_x")
    assert not list(tmp_path.glob("*.gguf"))


@pytest.mark.integration
def test_llamacpp_on_exported_f16_agrees_with_hf(data_dir, tmp_path, monkeypatch):
    """Gemma 3 270M exported to f16 GGUF: llama.cpp tokenizes like the hf tokenizer and its
    log-likelihoods match the hf backend's (fp32) within 0.05 nats per request."""
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(data_dir))
    pytest.importorskip("llama_cpp")
    from medslm.backends.hf import HFBackend
    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.models.loading import resolve
    from medslm.tasks import get_task

    art = resolve("gemma3-270m").artifact()
    out = ex.export_gguf(art, tmp_path / "base-f16.gguf", "f16", progress=False)
    side = json.loads(ex.sidecar(out).read_text())
    assert side["source_hash"] == art.hash and side["type"] == "f16" and side["bytes"] == os.path.getsize(out)
    t = get_task("pubmedqa")
    reqs = [r for e in t.examples("dev@50")[:4] for r in t.requests(e)]
    lb = LlamaCppBackend(str(out), threads=1)
    hb = HFBackend("gemma3-270m", threads=1)
    for r in reqs[:3]:
        assert lb.encode_pair(r.context, r.continuation) == hb.encode_pair(r.context, r.continuation)
    a, b = lb.loglikelihood(reqs), hb.loglikelihood(reqs)
    diffs = [abs(x[0] - y[0]) for x, y in zip(a, b)]
    assert max(diffs) < 0.05, diffs


@pytest.mark.parametrize("types", [["sliding_attention", "full_attention"], ["full_attention", "sliding_attention"]])
def test_gemma3_export_carries_its_own_global_layers(tmp_path, types):
    """llama.cpp's converter leaves Gemma 3's layer pattern out and its loader then assumes every sixth
    layer global; a depth-pruned model keeps the types of the layers it kept. The export writes them
    per layer, and llama.cpp's scores follow hf's with either pattern (global layers have their own
    RoPE base: without the array llama.cpp was 0.019 and 0.047 nats/token off hf here, with it 0.0001)."""
    pytest.importorskip("llama_cpp")
    import gguf

    from medslm.export.gguf import export_gguf
    from medslm.models.artifact import ModelArtifact

    art = tiny.save_artifact("gemma3", tmp_path / "base", spm=True)
    m, tok = art.load()
    m.config.layer_types = types
    m.config.rope_parameters = {"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10.0}}
    art = ModelArtifact.save(m, tok, tmp_path / "pattern", source="tiny-random:gemma3")
    out = export_gguf(art, tmp_path / "m.gguf", "f16", progress=False)
    field = gguf.GGUFReader(out).fields["gemma3.attention.sliding_window_pattern"]
    assert [bool(v) for v in field.contents()] == [t == "sliding_attention" for t in types]
    tiny.llamacpp_follows_hf(art, out, tok, tol=0.005)


def test_the_layer_pattern_is_written_only_where_llama_cpp_would_guess_wrong(tmp_path):
    """Gemma 3's upstream pattern (every sixth layer global) is what llama.cpp assumes without the
    per-layer array, so a dense export of an unpruned model is not rewritten for it; a pruned one's
    is; a config whose layer count differs from the file's is an error naming the file."""
    import gguf
    import numpy as np

    from medslm.export.gguf_file import layer_pattern, pattern_of

    def file(n_layer):
        path = tmp_path / f"m{n_layer}.gguf"
        w = gguf.GGUFWriter(path, "gemma3")
        w.add_block_count(n_layer)
        w.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
        w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
        return path

    upstream = ["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(12)]
    pruned = upstream[:4] + upstream[5:]  # layer 4 removed: the globals move to 4 and 10
    path = file(12)
    assert pattern_of(gguf.GGUFReader(path), {"layer_types": upstream}, path, when_default=False) is None
    assert pattern_of(gguf.GGUFReader(path), {"layer_types": upstream}, path) == [t == "sliding_attention" for t in upstream]
    before = path.read_bytes()
    assert not layer_pattern(path, {"layer_types": upstream}) and path.read_bytes() == before
    path = file(11)
    assert layer_pattern(path, {"layer_types": pruned})
    field = gguf.GGUFReader(path).fields["gemma3.attention.sliding_window_pattern"]
    assert [i for i, v in enumerate(field.contents()) if not v] == [4, 10]
    assert not layer_pattern(path, {"layer_types": pruned})  # already there
    with pytest.raises(MedslmError, match=r"m11.gguf: 11 layers in the GGUF, 12 layer_types"):
        layer_pattern(file(11), {"layer_types": upstream})


def test_export_to_a_relative_path(tmp_path, monkeypatch):
    """`medslm export --out runs/x.gguf` from the user's folder: the converter runs in its own folder,
    so the paths it is given must not be relative (they were, and every relative --out failed)."""
    pytest.importorskip("llama_cpp")
    import gguf

    art = tiny.save_artifact("llama", tmp_path / "base", spm=True)
    monkeypatch.chdir(tmp_path)
    out = ex.export_gguf(art, "runs/m.gguf", "q8_0", progress=False)
    assert out.resolve() == (tmp_path / "runs" / "m.gguf").resolve()
    assert {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "runs" / "m.gguf").tensors} >= {"Q8_0"}
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".tmp")] == []
