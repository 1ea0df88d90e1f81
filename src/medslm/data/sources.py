"""Where a dataset's files come from.

Resolution order: an explicit path (``--data PATH``) -> ``$MEDSLM_DATA_DIR/<name>/`` (the local
mirror, upstream file names) -> the medslm cache -> the upstream source, downloaded once. A
download goes to a temporary file, is checked (length, pinned SHA-256 where known, and a parse by
the loader), and only then moved into the cache with its SHA-256 recorded in ``SHA256SUMS``; later
runs verify the cached files against it. Credentialed data never downloads. Offline, a missing
dataset is a clear error, never an empty result.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medslm import settings
from medslm.errors import DataError
from medslm.system import sha256_file


@dataclass
class DatasetSpec:
    name: str
    kind: str
    description: str
    license: str
    upstream: str  # human-readable source
    load: Callable[..., list]  # load(root: Path, split, reader) -> list[Example]
    splits: tuple[str, ...] = ("train",)
    mirror_dirs: tuple[str, ...] = ()  # other folder names the mirror may use
    present: Callable[[Path], bool] | None = None  # does this folder hold the dataset?
    urls: dict[str, str] = field(default_factory=dict)  # file -> https URL (repository files)
    hf_repo: str | None = None  # Hugging Face dataset repository
    hf_patterns: tuple[str, ...] = ("*.jsonl", "*.json", "*.csv", "*.parquet")
    sha256: dict[str, str] = field(default_factory=dict)  # pinned checksums where known
    credentialed: str | None = None  # how to obtain access; never downloaded
    eval_only: str | None = None  # why training on it is refused (license/terms)
    records: str = ""  # a hint of the size, for `data ls`

    def is_present(self, root: Path) -> bool:
        if self.present is not None:
            return self.present(root)
        return root.is_dir() and any(root.iterdir())


def upstream_base(spec: DatasetSpec) -> str | None:
    """``MEDSLM_UPSTREAM_<NAME>`` overrides the base URL of a dataset's files (mirrors, tests)."""
    return os.environ.get(f"MEDSLM_UPSTREAM_{spec.name.upper()}")


def find_root(spec: DatasetSpec, path: str | os.PathLike | None = None, *, fetch: bool = True) -> Path:
    """The folder holding ``spec``'s files, fetching them into the cache if allowed and needed."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"{spec.name}: --data {p} does not exist")
        return p
    mirror = settings.data_dir()
    if mirror is not None:
        for d in (spec.name, *spec.mirror_dirs):
            if spec.is_present(mirror / d):
                return mirror / d
    cached = cache_root(spec)
    if spec.is_present(cached):
        verify_cache(spec, cached)
        return cached
    if spec.credentialed:
        raise DataError(f"{spec.name} is credentialed and never downloaded: {spec.credentialed}. "
                        f"Then pass --data PATH or put it under $MEDSLM_DATA_DIR/{spec.name}/")
    if not fetch:
        raise DataError(missing_message(spec))
    return download(spec)


def missing_message(spec: DatasetSpec) -> str:
    where = os.environ.get("MEDSLM_DATA_DIR")
    return (f"{spec.name}: not found (looked in {'$MEDSLM_DATA_DIR=' + where if where else 'no MEDSLM_DATA_DIR'}"
            f" and the cache {cache_root(spec)}); set MEDSLM_DATA_DIR to a data mirror, pass --data PATH, "
            f"or run `medslm data fetch {spec.name}` with network access (source: {spec.upstream})")


def cache_root(spec: DatasetSpec) -> Path:
    return settings.cache_dir() / "data" / spec.name


def verify_cache(spec: DatasetSpec, root: Path) -> None:
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(None, 1)
        f = root / name.strip()
        if not f.is_file() or sha256_file(f) != digest:
            raise DataError(f"{spec.name}: cached file {f} is missing or changed since download "
                            f"(SHA-256 mismatch); delete {root} and run `medslm data fetch {spec.name}`")


def _http_get(url: str, dest: Path) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "medslm"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r, open(dest, "wb") as f:
            expected = r.headers.get("Content-Length")
            n = 0
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
                n += len(chunk)
    except urllib.error.HTTPError as e:
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"download of {url} failed ({reason}); offline? Set MEDSLM_DATA_DIR to a "
                        "data mirror or pass --data PATH") from e
    if expected is not None and int(expected) != n:
        raise DataError(f"download of {url} is truncated: {n} of {expected} bytes")


def download(spec: DatasetSpec) -> Path:
    """Fetch ``spec`` into the cache: to a temp dir, verify, load once, then rename into place."""
    target = cache_root(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=target.parent))
    try:
        base = upstream_base(spec)
        if spec.urls or base:
            for name, url in spec.urls.items():
                if base:
                    url = base.rstrip("/") + "/" + name
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                _http_get(url, dest)
                if name.endswith(".zip"):
                    shutil.unpack_archive(dest, tmp)
                    dest.unlink()
        elif spec.hf_repo:
            _hf_download(spec, tmp)
        else:
            raise DataError(f"{spec.name}: no download source; {missing_message(spec)}")
        sums = []
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = f.relative_to(tmp).as_posix()
            digest = sha256_file(f)
            pinned = spec.sha256.get(rel)
            if pinned and pinned != digest:
                raise DataError(f"{spec.name}: downloaded {rel} has SHA-256 {digest}, expected "
                                f"{pinned}; the download is corrupted or upstream changed. Not cached")
            sums.append(f"{digest}  {rel}")
        from medslm.data.reader import Reader

        try:  # a file that does not parse is never cached
            spec.load(tmp, None, Reader(spec.name))
        except DataError as e:
            raise DataError(f"{spec.name}: the download does not parse, not cached: {e}") from e
        (tmp / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _hf_download(spec: DatasetSpec, dest: Path) -> None:
    from medslm.hub import hub_reachable

    if settings.hub_offline() or not hub_reachable():
        raise DataError(missing_message(spec) + "; the Hugging Face Hub cannot be reached")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(spec.hf_repo, repo_type="dataset",
                                 allow_patterns=list(spec.hf_patterns))
    except Exception as e:
        raise DataError(f"{spec.name}: download of {spec.hf_repo} from the Hugging Face Hub failed "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    for f in Path(path).rglob("*"):
        if f.is_file():
            out = dest / f.relative_to(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix == ".parquet":
                _parquet_to_jsonl(f, out.with_suffix(".jsonl"))
            else:
                shutil.copyfile(f, out)


def _parquet_to_jsonl(src: Path, dst: Path) -> None:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"{src.name} is Parquet; install pyarrow (pip install pyarrow) to read it") from e
    import json

    with open(dst, "w") as f:
        for row in pq.read_table(src).to_pylist():
            f.write(json.dumps(row, default=str) + "\n")


def find_files(root: Path, patterns: list[str]) -> list[Path]:
    """Files under ``root`` (a folder, or a file itself) matching any glob pattern, sorted."""
    if root.is_file():
        return [root]
    out: list[Path] = []
    for pat in patterns:
        out.extend(p for p in root.rglob(pat) if p.is_file() and not p.name.startswith("."))
    return sorted(set(out))


def iter_jsonl(name: str, root: Path, split: str | None, file_split, r,
               patterns: tuple[str, ...] = ("*.jsonl",)):
    """Yield ``(file, split, "line N", record)`` for every JSONL record of the wanted split, where
    ``file_split(path)`` names a file's split. No files at all is an error naming the folder."""
    files = find_files(Path(root), list(patterns))
    if not files:
        raise DataError(f"{name}: no {'/'.join(p.lstrip('*') for p in patterns)} files under {root}")
    for f in files:
        s = file_split(f)
        if split is not None and s != split:
            continue
        for line, rec in r.jsonl(f):
            yield f, s, f"line {line}", rec


def split_of(key: str, test_fraction: float = 0.1, salt: str = "medslm") -> str:
    """A fixed, machine-independent split: 'test' for a hash-chosen fraction of keys."""
    h = int(hashlib.sha1(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def select_split(examples: list, split: str | None, spec: DatasetSpec, root: Path) -> list:
    if split is None:
        return examples
    out = [e for e in examples if e.split == split]
    if not out:
        have = sorted({e.split for e in examples})
        if not have:  # the loader read only the requested split's files: list what the folder holds
            from medslm.data.reader import Reader

            have = sorted({e.split for e in spec.load(root, None, Reader(spec.name, lenient=True))})
        raise DataError(f"{spec.name}: no records in split {split!r} under {root}; splits here: "
                        f"{', '.join(have) or 'none'} (choose one with --split, or carve one: "
                        f"fit@N / dev@N)")
    return out

