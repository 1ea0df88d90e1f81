"""llama.cpp's own calibration, fed from medslm: an importance matrix for ``llama_model_quantize``.

llama.cpp's quantizer weighs each weight's rounding error by how large that weight's input column
is on calibration text (``llama-imatrix``: the mean of x_j^2 over every token that reaches a matrix
multiply, per input column j). medslm computes the same statistic with hooks on the dense model's
linear layers (the LM head too, as ``llama-imatrix --process-output``), on the calibration texts its
own methods read (so llama.cpp's calibrated Q4_0 is compared with GPTQ on the same texts), and hands
it to the quantizer by GGUF tensor name through ``llama_model_quantize_params.imatrix``. Written here because llama.cpp's ``llama-imatrix`` is a
separate binary that llama-cpp-python does not ship, and it reads only its own text files.

A matrix ``llama-imatrix`` already wrote is read too (:func:`read_imatrix_file`), in both of its
formats, and medslm's own can be saved in the current one (:func:`write_imatrix_file`) for
``llama-quantize --imatrix``. The formats, as llama.cpp's ``common/imatrix-loader.cpp`` reads them:

* GGUF (llama-imatrix's default since 2025): per weight ``NAME.in_sum2`` (F32, one row of input
  columns per expert: the sum of x_j^2) and ``NAME.counts`` (F32, tokens per expert), optional
  ``NAME.in_sum``; keys ``imatrix.datasets`` (strings), ``imatrix.chunk_count`` and
  ``imatrix.chunk_size`` (u32), which llama-quantize requires. The matrix is in_sum2 / counts (1
  where a count is 0).
* legacy ``.dat``: int32 entry count; per entry int32 name length, the name, int32 ncall, int32
  nval, nval float32 sums; then optionally int32 chunk count, int32 length and the dataset name.
  The matrix is sums / ncall (the sums where ncall is 0).

The gguf package reads and writes the first; the second is a few fixed-width fields, unpacked with
numpy here (no library reads it).
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


IMATRIX_FILE_SUFFIXES = (".gguf", ".dat", ".imatrix")


def is_imatrix_file(spec: str | None) -> bool:
    """``spec`` names llama-imatrix's output rather than calibration texts: a .gguf, .dat or
    .imatrix name, or an existing file that starts as a GGUF does."""
    if not spec:
        return False
    if str(spec).lower().endswith(IMATRIX_FILE_SUFFIXES):
        return True
    try:
        with open(Path(spec), "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def check_imatrix_file(path: str | Path, flag: str = "--imatrix") -> Path:
    """``path`` is a file (else an error naming where it was looked for and what else to give)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{flag} {path}: no such file (looked for {p.resolve()}); give the .gguf or .dat file "
                          "llama-imatrix wrote, or calibration texts (e.g. pubmedqa:fit@50,medquad) for medslm "
                          "to compute the matrix")
    return p


def imatrix_file_hash(path: str | Path, flag: str = "--imatrix") -> str:
    """The content hash of an importance-matrix file (its export cache key: a changed file is a new
    export; a moved one is not)."""
    from medslm.system import sha256_file

    p = check_imatrix_file(path, flag)
    try:
        return "sha256:" + sha256_file(p)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot be read ({e.strerror})") from e


# entry -> (sums, counts, input columns per matrix or None where the file does not say, matrices)
Entries = dict[str, tuple[np.ndarray, np.ndarray, "int | None", "int | None"]]


def _read_gguf(path: Path, flag: str) -> tuple[Entries, dict]:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the gguf package raises several types on a bad file
        raise ConfigError(f"{flag} {path}: not a readable GGUF file ({e})") from e
    parts: dict[str, dict[str, object]] = {}
    for t in reader.tensors:
        for suffix in (".in_sum2", ".counts", ".in_sum"):
            if t.name.endswith(suffix):
                if t.tensor_type != gguf.GGMLQuantizationType.F32:
                    raise ConfigError(f"{flag} {path}: tensor {t.name} is {t.tensor_type.name}; llama-imatrix "
                                      "writes its sums and counts as F32")
                parts.setdefault(t.name[: -len(suffix)], {})[suffix] = t
                break
    if not parts:
        raise ConfigError(f"{flag} {path}: a GGUF file with no NAME.in_sum2 / NAME.counts tensors; is it a model "
                          "rather than llama-imatrix's output?")
    keys = {k: reader.fields.get(f"imatrix.{k}") for k in ("datasets", "chunk_count", "chunk_size")}
    missing = [f"imatrix.{k}" for k, f in keys.items() if f is None]
    if missing:  # llama-quantize refuses such a file too ("missing imatrix metadata")
        raise ConfigError(f"{flag} {path}: no {', '.join(missing)}; llama-imatrix writes them and llama-quantize "
                          "refuses a matrix without them")
    try:
        datasets = keys["datasets"].contents()
        meta = {"format": "gguf", "datasets": [str(d) for d in (datasets if isinstance(datasets, list) else [datasets])],
                "chunk_count": int(keys["chunk_count"].contents()), "chunk_size": int(keys["chunk_size"].contents())}
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{flag} {path}: imatrix.chunk_count / imatrix.chunk_size are not integers ({e})") from e
    entries: Entries = {}
    for name, p in parts.items():
        if ".in_sum2" not in p or ".counts" not in p:
            raise ConfigError(f"{flag} {path}: entry {name} has no {'.in_sum2' if '.in_sum2' not in p else '.counts'} "
                              "tensor (llama-imatrix writes both)")
        sums_t, counts_t = p[".in_sum2"], p[".counts"]
        ne, cne = [int(x) for x in sums_t.shape], [int(x) for x in counts_t.shape]  # GGML order: ne[0] first
        n_mat = ne[1] if len(ne) > 1 else 1
        if len(ne) > 2 or len(cne) > 2 or cne[0] != 1 or (cne[1] if len(cne) > 1 else 1) != n_mat:
            raise ConfigError(f"{flag} {path}: entry {name}: in_sum2 of shape {ne} and counts of shape {cne}; "
                              "llama-imatrix writes [columns, matrices] and [1, matrices]")
        sums = np.asarray(sums_t.data, dtype=np.float64).reshape(-1)
        counts = np.floor(np.asarray(counts_t.data, dtype=np.float64).reshape(-1) + 0.5)  # C's lround
        entries[name] = (sums, counts, ne[0], n_mat)
    return entries, meta


def _read_legacy(path: Path, flag: str) -> tuple[Entries, dict]:
    data = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ConfigError(f"{flag} {path}: the file ends inside {what} (byte {pos} of {len(data)}); "
                              "a truncated or not a llama-imatrix file")
        pos += n
        return data[pos - n:pos]

    def i32(what: str) -> int:
        return int(np.frombuffer(take(4, what), "<i4")[0])

    n = i32("the entry count")
    if n < 1:
        raise ConfigError(f"{flag} {path}: {n} entries; not a llama-imatrix file")
    entries: Entries = {}
    for i in range(n):
        ln = i32(f"entry {i + 1}'s name length")
        if not 0 < ln < 4096:
            raise ConfigError(f"{flag} {path}: entry {i + 1} has a name of {ln} bytes; not a llama-imatrix file")
        name = take(ln, f"entry {i + 1}'s name").decode("utf-8", "replace")
        ncall, nval = i32(f"entry {name}'s call count"), i32(f"entry {name}'s value count")
        if nval < 1:
            raise ConfigError(f"{flag} {path}: entry {name} has {nval} values")
        sums = np.frombuffer(take(4 * nval, f"entry {name}'s values"), "<f4").astype(np.float64)
        entries[name] = (sums, np.array([float(ncall)]), None, None)  # the format does not say the shape
    meta: dict = {"format": "legacy", "datasets": [], "chunk_count": None, "chunk_size": None}
    if pos + 4 <= len(data):  # optional trailer: chunk count, then the dataset's name
        meta["chunk_count"] = i32("the chunk count")
        if pos + 4 <= len(data):
            ln = i32("the dataset name's length")
            if 0 < ln <= len(data) - pos:
                meta["datasets"] = [take(ln, "the dataset name").decode("utf-8", "replace")]
    return entries, meta


def load_imatrix_file(path: str | Path, flag: str = "--imatrix") -> tuple[Entries, dict]:
    """Parse an importance matrix llama-imatrix wrote (GGUF, told apart by its magic as llama.cpp
    does, else the legacy format); no model needed, so a bad file fails before any conversion."""
    p = Path(path)
    digest = imatrix_file_hash(p, flag)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
        entries, meta = _read_gguf(p, flag) if magic == b"GGUF" else _read_legacy(p, flag)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot be read ({e.strerror})") from e
    return entries, {"file": str(p), "sha256": digest, **meta}


def fit_imatrix(loaded: tuple[Entries, dict], f16: Path, flag: str = "--imatrix") -> tuple[dict[str, np.ndarray], dict]:
    """A parsed matrix file (:func:`load_imatrix_file`) for the tensors of ``f16`` (the converter's
    file of the model being quantized), as :func:`importance_matrix` returns one: GGUF tensor name
    -> values (the sums over the counts, per matrix of a 3-D expert tensor, as llama-quantize
    computes them), and provenance. An entry whose shape does not fit its tensor is an error (a
    matrix of another model); entries naming no tensor of this model are left out and listed, and a
    file none of whose entries fits is an error."""
    import gguf

    entries, meta = loaded
    p = meta["file"]
    shapes = {t.name: (int(t.shape[0]), int(t.shape[2]) if len(t.shape) > 2 else 1)
              for t in gguf.GGUFReader(f16).tensors if len(t.shape) >= 2}
    out, unused = {}, []
    for name, (sums, counts, cols, n_mat) in entries.items():
        if name not in shapes:
            unused.append(name)
            continue
        want_cols, want_mat = shapes[name]
        got = f"{cols} columns x {n_mat} matrices" if cols is not None else f"{sums.size} values"
        if cols is not None:  # GGUF says the shape
            fits = (cols, n_mat) == (want_cols, want_mat)
        else:  # legacy: only the count of values
            fits = sums.size == want_cols * want_mat
        if not fits:
            raise ConfigError(f"{flag} {p}: entry {name} holds {got}, but the tensor here is {want_cols} columns x "
                              f"{want_mat} matrices; the matrix was computed for another model")
        if not np.isfinite(sums).all() or (sums < 0).any():
            raise ConfigError(f"{flag} {p}: entry {name} holds negative or non-finite sums of squares")
        if meta["format"] == "gguf":
            c = np.repeat(counts, want_cols)
            v = np.where(c > 0, sums / np.where(c > 0, c, 1), 1.0)
        else:
            v = sums / counts[0] if counts[0] > 0 else sums
        out[name] = v.astype(np.float32)
    if not out:
        raise ConfigError(f"{flag} {p}: none of its {len(entries)} entries (e.g. {next(iter(entries))}) names a "
                          f"weight of this model ({f16.name}); the matrix was computed for another model")
    return out, {**meta, "tensors": len(out), "unused_entries": sorted(unused)}


def read_imatrix_file(path: str | Path, f16: Path, flag: str = "--imatrix") -> tuple[dict[str, np.ndarray], dict]:
    """:func:`load_imatrix_file` then :func:`fit_imatrix`."""
    return fit_imatrix(load_imatrix_file(path, flag), f16, flag)


def write_imatrix_file(path: str | Path, values: dict[str, np.ndarray], counts: dict[str, int] | int,
                       datasets: list[str], chunk_count: int, chunk_size: int) -> Path:
    """``values`` (GGUF tensor name -> the matrix, as :func:`importance_matrix` gives it) in
    llama-imatrix's GGUF format, for ``llama-quantize --imatrix``: in_sum2 = values x count, so the
    reader's in_sum2 / counts gives the values back. ``counts``: tokens per tensor (or one for all)."""
    import gguf

    p = Path(path)
    w = gguf.GGUFWriter(p, arch="imatrix", use_temp_file=False)
    w.add_type("imatrix")
    from medslm.outputs import IMATRIX_WRITTEN_BY_KEY

    w.add_string(IMATRIX_WRITTEN_BY_KEY, "medslm")  # so --overwrite may replace it (written_by_medslm)
    w.add_array("imatrix.datasets", list(datasets))
    w.add_uint32("imatrix.chunk_count", int(chunk_count))
    w.add_uint32("imatrix.chunk_size", int(chunk_size))
    for name in sorted(values):
        c = counts if isinstance(counts, int) else counts[name]
        v = np.asarray(values[name], dtype=np.float64)
        w.add_tensor(f"{name}.in_sum2", (v * c).astype(np.float32).reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.array([[float(c)]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p


__all__ = ["check_imatrix_file", "fit_imatrix", "gguf_names", "importance_matrix", "imatrix_file_hash", "is_imatrix_file",
           "load_imatrix_file", "read_imatrix_file", "write_imatrix_file"]
