"""Export a dense artifact to GGUF (f32, f16, bf16, q8_0 and llama.cpp's k-quants such as q4_k_m).

The conversion is llama.cpp's own ``convert_hf_to_gguf.py`` (called, not copied): medslm fetches it
once from the source distribution of the installed ``llama-cpp-python`` on PyPI (the sdist ships
llama.cpp's converter and its ``gguf-py``), verifies the SHA-256 the index publishes and caches it
under ``$MEDSLM_CACHE/llama.cpp-convert/<version>/``. Offline, point ``MEDSLM_LLAMACPP_DIR`` at a
llama.cpp checkout. K-quants are made from the f16 file by ``llama_cpp.llama_model_quantize``.

One gap is medslm's to fill: llama.cpp reads a SentencePiece vocabulary (``tokenizer.model``) for
Gemma, but an artifact converted from a GGUF, or with a trimmed vocabulary, carries only
``tokenizer.json``. For such byte-fallback BPE vocabularies medslm writes the equivalent
``tokenizer.model`` (pieces in id order, score = minus the rank of the merge that makes the piece,
types from the special/added/byte tokens) into the staging folder; tests check that llama.cpp then
tokenizes as the Hugging Face tokenizer does and scores the same log-likelihoods.

Every export writes ``<file>.medslm.json`` beside the GGUF: source artifact, its hash and chain,
the type, the converter's version and the GGUF's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from medslm.errors import ArtifactError, ConfigError, MedslmError

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by convert_hf_to_gguf.py itself
QUANT_TYPES = {  # made from f16 by llama.cpp's quantizer (llama_ftype values)
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1", "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1", "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K", "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    # llama.cpp's non-linear grids; those marked in NEEDS_IMATRIX only with an importance matrix
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL", "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "iq3_m": "LLAMA_FTYPE_MOSTLY_IQ3_M", "iq3_xxs": "LLAMA_FTYPE_MOSTLY_IQ3_XXS",
    "iq2_m": "LLAMA_FTYPE_MOSTLY_IQ2_M", "iq2_xs": "LLAMA_FTYPE_MOSTLY_IQ2_XS",
}
NEEDS_IMATRIX = ("iq2_xs", "iq2_m")  # llama.cpp refuses these without one (llama-quant.cpp, "missing importance matrix")
TYPES = CONVERTER_TYPES + tuple(QUANT_TYPES)
# how errors name the options of llama.cpp's quantizer: the CLI's flags, a recipe variant's fields
LLAMA_FLAGS = ("--tensor-type", "--imatrix", "--imatrix-samples")
RECIPE_FLAGS = ("gguf_types:", "gguf_imatrix:", "gguf_imatrix_samples:")
SIMPLE_INDEX = "https://pypi.org/simple"


# ----------------------------------------------------------------------------- the converter
def converter_dir(progress: bool = True) -> Path:
    """A folder with llama.cpp's ``convert_hf_to_gguf.py`` (and ``conversion/``, ``gguf-py/``)."""
    env = os.environ.get("MEDSLM_LLAMACPP_DIR")
    if env:
        d = Path(env).expanduser()
        if not (d / "convert_hf_to_gguf.py").is_file():
            raise ConfigError(f"MEDSLM_LLAMACPP_DIR={env}: no convert_hf_to_gguf.py there; point it at a "
                              "llama.cpp checkout")
        return d
    from importlib import metadata

    from medslm import settings

    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise MedslmError("GGUF export uses llama.cpp's converter from llama-cpp-python: "
                          "pip install 'medslm[llamacpp]' (or set MEDSLM_LLAMACPP_DIR to a llama.cpp "
                          "checkout)") from None
    dest = settings.cache_dir() / "llama.cpp-convert" / version
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / "convert_hf_to_gguf.py").is_file():
            fetch_converter(version, dest, progress=progress)
    return dest


def sdist_url(version: str, index: str | None = None) -> tuple[str, str]:
    """(url, sha256) of llama-cpp-python's sdist for ``version`` from a PEP 503 simple index."""
    import urllib.request

    index = (index or os.environ.get("MEDSLM_PYPI_SIMPLE") or SIMPLE_INDEX).rstrip("/")
    page_url = f"{index}/llama-cpp-python/"
    try:
        with urllib.request.urlopen(page_url, timeout=30) as r:
            page = r.read().decode("utf-8", "replace")
    except OSError as e:
        raise MedslmError(f"cannot read {page_url} to fetch llama.cpp's GGUF converter ({e}); offline, "
                          "set MEDSLM_LLAMACPP_DIR to a llama.cpp checkout") from e
    name = f"llama_cpp_python-{version}.tar.gz"
    for href in re.findall(r'href="([^"]+)"', page):
        if href.split("#")[0].rsplit("/", 1)[-1] == name:
            m = re.search(r"#sha256=([0-9a-f]{64})", href)
            if not m:
                raise MedslmError(f"{page_url}: {name} is listed without a sha256; refusing an unverified download")
            url = href.split("#")[0]
            if not re.match(r"^https?://", url):
                from urllib.parse import urljoin

                url = urljoin(page_url, url)
            return url, m.group(1)
    raise MedslmError(f"{page_url} lists no {name}; set MEDSLM_LLAMACPP_DIR to a llama.cpp checkout")


def fetch_converter(version: str, dest: Path, progress: bool = True) -> None:
    """Download the sdist, verify it, and keep only the converter's files (atomically)."""
    import tempfile
    import urllib.request

    url, sha = sdist_url(version)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tar_path = Path(tmp) / "sdist.tar.gz"
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tar_path, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0)
                from tqdm.auto import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, disable=not progress,
                          desc=f"llama.cpp converter ({version})") as bar:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        except OSError as e:
            raise MedslmError(f"downloading {url} failed ({e}); offline, set MEDSLM_LLAMACPP_DIR") from e
        if h.hexdigest() != sha:
            raise MedslmError(f"{url}: sha256 {h.hexdigest()} differs from the index's {sha}; not used")
        out = Path(tmp) / "conv"
        wanted = re.compile(r"^[^/]+/vendor/llama\.cpp/(convert_hf_to_gguf\.py|conversion/.*|gguf-py/.*)$")
        with tarfile.open(tar_path) as tf:
            members = [m for m in tf.getmembers() if wanted.match(m.name) and (m.isfile() or m.isdir())]
            if not any(m.name.endswith("/convert_hf_to_gguf.py") for m in members):
                raise MedslmError(f"{url}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
            for m in members:
                rel = wanted.match(m.name).group(1)
                target = out / rel
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        (out / "SOURCE.json").write_text(json.dumps({"url": url, "sha256": sha, "version": version}) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)


# ----------------------------------------------------------------------------- vocabulary
def spm_from_tokenizer_json(tok_json: dict, special_ids: dict[str, int]) -> bytes:
    """A SentencePiece BPE ``tokenizer.model`` equivalent to a byte-fallback BPE tokenizer.json."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = tok_json.get("model", {})
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ArtifactError("GGUF export: this vocabulary is not a SentencePiece-style byte-fallback BPE "
                            "and the model has no tokenizer.model; llama.cpp cannot read it")
    vocab: dict[str, int] = model["vocab"]
    n = max(vocab.values()) + 1
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    n = max([n] + [i + 1 for i in added])
    pieces: list[str | None] = [None] * n
    for t, i in vocab.items():
        pieces[i] = t
    for i, a in added.items():
        pieces[i] = a["content"]
    rank: dict[str, int] = {}
    for r, mg in enumerate(model.get("merges", [])):
        a, b = mg if isinstance(mg, list) else mg.split(" ", 1)
        rank.setdefault(a + b, r)
    mp = pb.ModelProto()
    ts = mp.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = n
    ts.byte_fallback = True
    for key, field in (("unk", "unk_id"), ("bos", "bos_id"), ("eos", "eos_id"), ("pad", "pad_id")):
        setattr(ts, field, special_ids.get(key, -1) if special_ids.get(key) is not None else -1)
    ns = mp.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    T = pb.ModelProto.SentencePiece
    for i, p in enumerate(pieces):
        sp = mp.pieces.add()
        if p is None:  # a hole in the ids: keep numbering, never produced
            sp.piece, sp.type, sp.score = f"<medslm_unused_{i}>", T.UNUSED, 0.0
            continue
        sp.piece = p
        if i == special_ids.get("unk"):
            sp.type = T.UNKNOWN
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", p):
            sp.type = T.BYTE
        elif i in added:
            sp.type = T.CONTROL if added[i].get("special") else T.USER_DEFINED
        else:
            sp.type = T.NORMAL
        sp.score = -float(rank[p]) if p in rank else 0.0
    return mp.SerializeToString()


def byte_fallback_bpe(tok_json: dict) -> bool:
    """A SentencePiece-style vocabulary in tokenizer.json: BPE with byte fallback (Gemma, Llama 2,
    Mistral); not a byte-level BPE (GPT-2, Llama 3), which llama.cpp reads as such."""
    m = tok_json.get("model") or {}
    return m.get("type") == "BPE" and bool(m.get("byte_fallback"))


def _stage(art, tmp: Path) -> Path:
    """A folder the converter reads: the artifact's files (linked) plus a tokenizer.model if needed."""
    from transformers import AutoTokenizer

    stage = tmp / "hf"
    stage.mkdir(parents=True)
    for f in art.path.iterdir():
        if f.is_file() and f.name != "medslm.json":
            os.symlink(f.resolve(), stage / f.name)
    cfg = json.loads((art.path / "config.json").read_text())
    # the architectures whose llama.cpp converter reads a SentencePiece vocabulary first
    spm_arch = any(a in str(cfg.get("model_type", "")) for a in ("gemma", "llama", "mistral"))
    if not (art.path / "tokenizer.model").is_file() and (art.path / "tokenizer.json").is_file() and spm_arch \
            and byte_fallback_bpe(json.loads((art.path / "tokenizer.json").read_text())):
        tok = AutoTokenizer.from_pretrained(art.path)
        ids = {"unk": tok.unk_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id,
               "pad": tok.pad_token_id}
        (stage / "tokenizer.model").write_bytes(
            spm_from_tokenizer_json(json.loads((art.path / "tokenizer.json").read_text()), ids))
    return stage


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
            first = _convert(src, tmp, conv, "f32", art.path, pattern=False)  # write_blocks adds it
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
            first = _convert(src, tmp, conv, qtype if qtype in CONVERTER_TYPES else "f16", art.path)
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
                _quantize(first, final, qtype, threads, tensor_types, imat)
                if tensor_types:  # what was asked, and what llama.cpp wrote (it falls back where rows do not fit)
                    extra_side["tensor_types"] = tensor_types
                    extra_side["tensor_types_written"] = written_types(final, tensor_types)
        digest = hashlib.sha256()
        with open(final, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        side = {"source": str(art.path), "source_hash": art.hash, "chain": art.step_chain(),
                "steps": art.meta.steps, "type": qtype, "bytes": final.stat().st_size,
                "sha256": digest.hexdigest(), "converter": str(conv / "convert_hf_to_gguf.py"),
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


def _convert(src, tmp: Path, conv: Path, outtype: str, where: Path, pattern: bool = True) -> Path:
    """``src`` (an artifact) through llama.cpp's converter: a GGUF of ``outtype`` in ``tmp``
    (``pattern``: with the per-layer sliding-window pattern where llama.cpp needs it)."""
    stage = _stage(src, tmp)
    first = tmp / f"model-{outtype}.gguf"
    # absolute: the converter runs in its own folder, where a relative --out's paths would not exist
    cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(Path(stage).resolve()), "--outfile",
           str(first.resolve()), "--outtype", outtype]
    p = subprocess.run(cmd, cwd=conv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        tail = "\n".join(p.stdout.strip().splitlines()[-8:])
        raise MedslmError(f"llama.cpp's convert_hf_to_gguf.py failed on {where} (exit {p.returncode}):\n{tail}")
    if pattern:
        from medslm.export.gguf_file import layer_pattern

        layer_pattern(first, json.loads((src.path / "config.json").read_text()))
    return first


def sidecar(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".medslm.json")


# llama.cpp's tensor types a --tensor-type override may name (its block types, and floats)
OVERRIDE_TYPES = ("f32", "f16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "iq4_nl", "iq4_xs", "q2_k", "q3_k",
                  "q4_k", "q5_k", "q6_k")


def parse_tensor_types(items, flag: str = "--tensor-type") -> dict[str, str]:
    """``PATTERN=TYPE`` items (llama-quantize's ``--tensor-type``: a regular expression searched in
    each GGUF tensor name, e.g. ``ffn_(gate|up|down)=q8_0`` or ``token_embd=q5_0``) as a dict,
    checked: each pattern compiles and each type is one llama.cpp quantizes to."""
    out: dict[str, str] = {}
    for item in items.items() if isinstance(items, dict) else [tuple(i.rsplit("=", 1)) for i in items]:
        if len(item) != 2 or not item[0] or not item[1]:
            raise ConfigError(f"{flag} {'='.join(item)!r}: give PATTERN=TYPE, e.g. 'ffn_down=q8_0'")
        pat, t = item[0], str(item[1]).lower()
        try:
            re.compile(pat)
        except re.error as e:
            raise ConfigError(f"{flag} {pat}={t}: the pattern is not a regular expression ({e})") from e
        if t not in OVERRIDE_TYPES:
            raise ConfigError(f"{flag} {pat}={t}: choose a type of {', '.join(OVERRIDE_TYPES)}")
        out[pat] = t
    return out


def check_llama_options(qtype: str, tensor_types: dict, imatrix: str | None, imatrix_samples: int | None,
                        quantized: bool = False, flags: tuple[str, str, str] = LLAMA_FLAGS) -> None:
    """The options of llama.cpp's quantizer, refused where they would do nothing or fail late:
    ``quantized``: the artifact holds medslm's own integers (their types are its quantize step's)."""
    if (tensor_types or imatrix) and (quantized or qtype not in QUANT_TYPES):
        flag = flags[0] if tensor_types else flags[1]
        why = ("the GGUF holds medslm's own integers, whose types its quantize step chose (--bits8, --embeddings)"
               if quantized else f"{qtype} is written by the converter, not llama.cpp's quantizer")
        raise ConfigError(f"{flag} applies where llama.cpp quantizes a dense model (type "
                          f"{' | '.join(QUANT_TYPES)}): {why}")
    from medslm.export.imatrix import is_imatrix_file

    if imatrix_samples is not None and not imatrix:
        raise ConfigError(f"{flags[2]} {imatrix_samples}: it counts the texts of {flags[1]}, which is not given")
    if imatrix_samples is not None and is_imatrix_file(imatrix):
        raise ConfigError(f"{flags[2]} {imatrix_samples}: it counts calibration texts, but {flags[1]} {imatrix} is "
                          "a matrix llama-imatrix already computed; drop it")
    if imatrix_samples is not None and imatrix_samples < 1:
        raise ConfigError(f"{flags[2]} {imatrix_samples}: give at least 1")
    if qtype in NEEDS_IMATRIX and not imatrix:
        raise ConfigError(f"type {qtype}: llama.cpp quantizes to it only with an importance matrix; add "
                          f"{flags[1]} CALIBRATION (e.g. pubmedqa:fit@50,medquad)")
    if is_imatrix_file(imatrix) and not Path(imatrix).is_file():
        raise ConfigError(f"{flags[1]} {imatrix}: no such file (looked for {Path(imatrix).resolve()}); give the "
                          ".gguf or .dat file llama-imatrix wrote, or calibration texts (e.g. "
                          "pubmedqa:fit@50,medquad) for medslm to compute the matrix")


def _claims(names: list[str], tensor_types: dict[str, str]) -> dict[str, list[str]]:
    """pattern -> the tensor names it decides (the first pattern a name matches wins)."""
    claims: dict[str, list[str]] = {p: [] for p in tensor_types}
    for n in names:
        p = next((p for p in tensor_types if re.search(p, n)), None)
        if p is not None:
            claims[p].append(n)
    return claims


def check_patterns(src: Path, tensor_types: dict[str, str], flag: str = "--tensor-type") -> None:
    """Each pattern decides the type of at least one weight matrix of ``src`` (a typo, a pattern
    matching only norms, or one every name of which an earlier pattern takes, would do nothing)."""
    import gguf

    weights = [t.name for t in gguf.GGUFReader(src).tensors if len(t.shape) >= 2]
    for pat, names in _claims(weights, tensor_types).items():
        if not names:
            raise ConfigError(f"{flag} {pat}={tensor_types[pat]}: no weight matrix is decided by {pat!r} (no name "
                              "matches, or an earlier pattern takes each one); the names look like "
                              f"{', '.join(weights[:4])}")


def written_types(path: Path, tensor_types: dict[str, str]) -> dict[str, dict[str, int]]:
    """pattern -> {the type llama.cpp wrote: how many tensors} for the tensors each pattern decides."""
    import gguf

    types = {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(path).tensors}
    out = {}
    for pat, names in _claims(list(types), tensor_types).items():
        counts: dict[str, int] = {}
        for n in names:
            if types[n] not in ("f32",):
                counts[types[n]] = counts.get(types[n], 0) + 1
        out[pat] = counts
    return out


def _quantize(src: Path, dst: Path, qtype: str, threads: int | None, tensor_types: dict[str, str] | None = None,
              imatrix: dict | None = None) -> None:
    """llama.cpp's quantizer: ``src`` (f16 GGUF) to ``qtype``, with per-tensor type overrides (the
    first pattern a tensor name matches wins, as in llama-quantize) and an importance matrix
    (:func:`medslm.export.imatrix.importance_matrix`) when given."""
    import ctypes

    try:
        import llama_cpp
    except ImportError as e:
        raise MedslmError(f"--type {qtype} needs llama-cpp-python: pip install 'medslm[llamacpp]'") from e
    from medslm.backends.llamacpp import free_cores

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[qtype])
    params.nthread = int(threads or free_cores())
    keep = []  # ctypes arrays the call reads: alive until it returns
    if tensor_types:
        over = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()  # zeroed: the terminator
        for i, (pat, t) in enumerate(tensor_types.items()):
            over[i].pattern = pat.encode()
            over[i].type = getattr(llama_cpp, "GGML_TYPE_" + t.upper())
        keep.append(over)
        params.tt_overrides = ctypes.cast(over, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if imatrix:
        import numpy as np

        data = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, v) in enumerate(imatrix.items()):
            v = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(v)
            data[i].name = name.encode()
            data[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            data[i].size = v.size
        keep.append(data)
        params.imatrix = ctypes.cast(data, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        hint = ("; llama.cpp wants an importance matrix for some i-quant tensors: add --imatrix CALIBRATION"
                if qtype.startswith("iq") and not imatrix else "")
        raise MedslmError(f"llama.cpp could not quantize {src.name} to {qtype} (code {rc}; its log above says "
                          f"why){hint}")


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


__all__ = ["TYPES", "converter_dir", "export_gguf", "sidecar", "spm_from_tokenizer_json"]


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
