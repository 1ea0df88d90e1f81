"""llama.cpp's Hugging Face -> GGUF converter, as medslm runs it.

The conversion is llama.cpp's own ``convert_hf_to_gguf.py`` (called, not copied): medslm fetches it
once from the source distribution of the installed ``llama-cpp-python`` on PyPI (the sdist ships
llama.cpp's converter and its ``gguf-py``), verifies the SHA-256 the index publishes and caches it
under ``$MEDSLM_CACHE/llama.cpp-convert/<version>/``. Offline, point ``MEDSLM_LLAMACPP_DIR`` at a
llama.cpp checkout.

One gap is medslm's to fill: llama.cpp reads a SentencePiece vocabulary (``tokenizer.model``) for
Gemma, but an artifact converted from a GGUF, or with a trimmed vocabulary, carries only
``tokenizer.json``. For such byte-fallback BPE vocabularies medslm writes the equivalent
``tokenizer.model`` (pieces in id order, score = minus the rank of the merge that makes the piece,
types from the special/added/byte tokens) into the staging folder; tests check that llama.cpp then
tokenizes as the Hugging Face tokenizer does and scores the same log-likelihoods.
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


def stage(art, tmp: Path) -> Path:
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


def convert(src, tmp: Path, conv: Path, outtype: str, where: Path, pattern: bool = True) -> Path:
    """``src`` (an artifact) through llama.cpp's converter: a GGUF of ``outtype`` in ``tmp``
    (``pattern``: with the per-layer sliding-window pattern where llama.cpp needs it)."""
    staged = stage(src, tmp)
    first = tmp / f"model-{outtype}.gguf"
    # absolute: the converter runs in its own folder, where a relative --out's paths would not exist
    cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(Path(staged).resolve()), "--outfile",
           str(first.resolve()), "--outtype", outtype]
    p = subprocess.run(cmd, cwd=conv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        tail = "\n".join(p.stdout.strip().splitlines()[-8:])
        raise MedslmError(f"llama.cpp's convert_hf_to_gguf.py failed on {where} (exit {p.returncode}):\n{tail}")
    if pattern:
        from medslm.export.gguf_file import layer_pattern

        layer_pattern(first, json.loads((src.path / "config.json").read_text()))
    return first


__all__ = ["byte_fallback_bpe", "convert", "converter_dir", "fetch_converter", "sdist_url", "spm_from_tokenizer_json",
           "stage"]
