"""ModelArtifact: a model directory that knows where it came from.

Layout (a Hugging Face model directory plus one file)::

    model.safetensors   (or sharded safetensors)   weights
    config.json, generation_config.json
    tokenizer files
    medslm.json         provenance: source, steps applied, parameters, bytes, dtype, content hash

Every method reads an artifact and writes a new one (never modifying its input), appending one step
to ``steps``; so any result traces back to its source and recipe. Writing is atomic: the directory
is built under a temporary name beside the target and renamed into place, so an interrupted write
never leaves a half artifact that later loads.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medslm import __version__
from medslm.errors import ArtifactError

SCHEMA_VERSION = 1
FORMAT_STEPS = {"convert_gguf"}  # provenance, but not a change a report should label
META_FILE = "medslm.json"
_HASH_SKIP = {META_FILE, "README.md"}  # the model card is rebuilt from results; not the model's content
PACKAGES = ("torch", "transformers", "safetensors", "tokenizers", "accelerate", "peft", "gguf")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the packages that shape a number medslm prints (missing ones omitted)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "medslm": __version__}
    for name in PACKAGES + tuple(extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 over every file of an artifact except ``medslm.json`` (names and bytes, sorted)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel in _HASH_SKIP or rel.startswith("."):
            continue
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def dir_bytes(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def file_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of each file the content hash covers (recorded, so loading can check sizes cheaply)."""
    root = Path(path)
    return {f.relative_to(root).as_posix(): f.stat().st_size for f in sorted(root.rglob("*"))
            if f.is_file() and f.relative_to(root).as_posix() not in _HASH_SKIP
            and not f.relative_to(root).as_posix().startswith(".")}


def safetensors_problem(f: Path) -> str | None:
    """Why a safetensors file cannot be whole (its header does not parse, or its tensors end past
    the end of the file), or None. Reads only the header."""
    size = f.stat().st_size
    try:
        with open(f, "rb") as h:
            n = int.from_bytes(h.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size or n > 100_000_000:
                return f"its header claims {n} bytes but the file has {size}"
            header = json.loads(h.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"its header does not parse ({type(e).__name__})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [v.get("data_offsets") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if any(not (isinstance(o, list) and len(o) == 2 and all(isinstance(x, int) for x in o)) for o in ends):
        return "a tensor's data_offsets are not two integers"
    end = max((o[1] for o in ends), default=0)
    if 8 + n + end > size:
        return f"its tensors need {8 + n + end} bytes but the file has {size} (truncated)"
    return None


@dataclass
class ArtifactMeta:
    source: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    parameters: int = 0
    bytes: int = 0
    dtype: str = "float32"
    content_hash: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    architecture: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # file -> bytes (what content_hash covers)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "ArtifactMeta":
        if not isinstance(d, dict):
            raise ArtifactError(f"{where}: holds a JSON {type(d).__name__}, not an object; the artifact's "
                                "metadata is damaged: rebuild the artifact (or delete the file to load it "
                                "as a plain Hugging Face directory)")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ArtifactError(f"{where}: unknown keys {sorted(unknown)} (schema {SCHEMA_VERSION})")
        if d.get("schema_version", 0) > SCHEMA_VERSION:
            raise ArtifactError(
                f"{where}: schema_version {d['schema_version']} is newer than this medslm "
                f"understands ({SCHEMA_VERSION}); upgrade medslm"
            )
        if "source" not in d:
            raise ArtifactError(f"{where}: missing key 'source'")
        return cls(**d)


class ModelArtifact:
    """A model directory with provenance. ``ModelArtifact.open(path)`` reads one."""

    def __init__(self, path: Path, meta: ArtifactMeta):
        self.path = Path(path)
        self.meta = meta

    # ---------------------------------------------------------------- reading
    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelArtifact":
        """Open a medslm artifact, or a plain Hugging Face model directory (provenance synthesized)."""
        p = Path(path)
        if not p.is_dir():
            raise ArtifactError(f"{p}: not a directory")
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ArtifactError(
                f"{p}: no config.json; not a Hugging Face model directory. Pass a model directory, "
                "a .gguf file, a preset name (medslm models ls) or a hub id org/name"
            )
        meta_file = p / META_FILE
        if meta_file.is_file():
            try:
                raw = json.loads(meta_file.read_text())
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{meta_file}: not valid JSON ({e}); the artifact is damaged") from e
            return cls(p, ArtifactMeta.from_dict(raw, str(meta_file)))
        if not (p / "config.json").is_file():
            raise ArtifactError(f"{p}: a bare adapter directory (adapter_config.json) without "
                                f"{META_FILE}; medslm needs to know its base model. Load it with peft, "
                                "merge it and save the result, or write it with `medslm finetune`")
        cfg = json.loads((p / "config.json").read_text())
        arch = (cfg.get("architectures") or [""])[0]
        return cls(p, ArtifactMeta(source=str(p.resolve()), architecture=arch,
                                   dtype=str(cfg.get("dtype") or cfg.get("torch_dtype") or "unknown"),
                                   bytes=dir_bytes(p)))

    @property
    def hash(self) -> str:
        if not self.meta.content_hash:
            self.meta.content_hash = content_hash(self.path)
        return self.meta.content_hash

    def verify(self) -> None:
        """Recompute the content hash and compare with the recorded one (after the size check)."""
        self.check_files()
        actual = content_hash(self.path)
        if self.meta.content_hash and actual != self.meta.content_hash:
            raise ArtifactError(
                f"{self.path}: content hash {actual} differs from the recorded "
                f"{self.meta.content_hash}; the files were changed after medslm wrote them. "
                f"{self._rebuild_hint()}"
            )

    def _rebuild_hint(self) -> str:
        names = [s.get("name") for s in self.meta.steps if s.get("name") not in FORMAT_STEPS]
        if names:
            return (f"Rebuild it: rerun the steps that made it ({' -> '.join(names)}; their configs are in "
                    f"`medslm models info {self.path}`) into a new --out")
        if any(s.get("name") == "convert_gguf" for s in self.meta.steps):
            return f"Delete {self.path}: medslm converts the GGUF again on the next use"
        return "Restore the directory from where it came from"

    def check_files(self) -> None:
        """Cheap integrity check, run on every load: each file medslm recorded exists with its
        recorded size, and each safetensors file is whole (header parses, tensors within the file)."""
        for rel, size in self.meta.files.items():
            f = self.path / rel
            if not f.is_file():
                raise ArtifactError(f"{f}: missing (medslm.json records {size:,} bytes); the artifact is "
                                    f"damaged. {self._rebuild_hint()}")
            if f.stat().st_size != size:
                raise ArtifactError(f"{f}: {f.stat().st_size:,} bytes, but medslm.json records {size:,}; "
                                    f"the file is truncated or was changed. {self._rebuild_hint()}")
        for f in sorted(self.path.glob("*.safetensors")):
            why = safetensors_problem(f)
            if why:
                raise ArtifactError(f"{f}: damaged: {why}. {self._rebuild_hint()}")

    def verify_once(self) -> None:
        """The full hash check on first use of these files (sizes and times unchanged since a
        successful check: skipped); the mark lives in the medslm cache."""
        if not self.meta.content_hash:
            return
        from medslm import settings

        stamp = [(f.relative_to(self.path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in sorted(self.path.rglob("*")) if f.is_file() and f.relative_to(self.path).as_posix() not in _HASH_SKIP]
        key = hashlib.sha256(json.dumps([str(self.path.resolve()), self.meta.content_hash, stamp]).encode())
        mark = settings.cache_dir() / "verified" / key.hexdigest()[:32]
        if mark.is_file():
            return
        self.verify()
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(str(self.path) + "\n")
        except OSError:  # a read-only cache: verify again next time
            pass

    @property
    def is_adapter(self) -> bool:
        return bool(self.meta.extra.get("adapter"))

    def step_chain(self) -> str:
        """The methods applied, e.g. ``base -> trim -> quantize`` (format conversions not shown)."""
        names = [s.get("name", "?") for s in self.meta.steps if s.get("name") not in FORMAT_STEPS]
        return " -> ".join(["base"] + names) if names else "base"

    def load(self, dtype: str | None = None, device: str = "cpu"):
        """Load (model, tokenizer). Strict: missing or unexpected weights are an error listing them."""
        from medslm.models.weights import load_hf_dir

        self.check_files()
        self.verify_once()
        if self.meta.extra.get("adapter"):
            return self._load_adapter(dtype=dtype, device=device)
        return load_hf_dir(self.path, dtype=dtype, device=device,
                           quantization=self.meta.extra.get("quantization"))

    def _load_adapter(self, dtype: str | None = None, device: str = "cpu"):
        """(model, tokenizer) of an adapter artifact: its base model with the adapter merged in memory."""
        from transformers import AutoTokenizer

        from medslm.models.weights import merge_adapter

        ad = self.meta.extra["adapter"]
        base_path = Path(ad["base"])
        if not base_path.is_dir():
            raise ArtifactError(f"{self.path}: the adapter's base model {base_path} is missing (hash "
                                f"{ad.get('base_hash')}); restore it, or fine-tune with merge: true so the "
                                "result does not depend on another directory")
        base = ModelArtifact.open(base_path)
        if ad.get("base_hash") and base.hash != ad["base_hash"]:
            raise ArtifactError(f"{self.path}: the adapter was trained on {base_path} with hash "
                                f"{ad['base_hash']}, which now has {base.hash}; the base changed")
        model, _ = base.load(dtype=dtype or "float32", device="cpu")
        model = merge_adapter(model, self.path)
        if device != "cpu":
            model.to(device)
        return model, AutoTokenizer.from_pretrained(self.path)

    def describe(self) -> dict[str, Any]:
        d = asdict(self.meta)
        d["path"] = str(self.path)
        d["chain"] = self.step_chain()
        return d

    # ---------------------------------------------------------------- writing
    @staticmethod
    def save(model, tokenizer, out: str | os.PathLike, *, source: str,
             steps: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None,
             overwrite: bool = False) -> "ModelArtifact":
        """Write ``model`` and ``tokenizer`` as a new artifact at ``out``, atomically."""

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

        params = sum(p.numel() for p in model.parameters())
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        arch = type(model).__name__
        return write_artifact(write, out, source=source, steps=steps or [], parameters=params,
                              dtype=dtype, architecture=arch, extra=extra, overwrite=overwrite)


def new_step(name: str, config: dict[str, Any], **info: Any) -> dict[str, Any]:
    """One provenance entry: the method name, its full config, medslm version and time."""
    return {"name": name, "config": config, "medslm_version": __version__,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **info}


def write_artifact(write_fn, out: str | os.PathLike, *, source: str, steps: list[dict[str, Any]],
                   parameters: int, dtype: str, architecture: str,
                   extra: dict[str, Any] | None = None, overwrite: bool = False) -> ModelArtifact:
    """Build an artifact in a temporary sibling directory with ``write_fn(tmp)``, then rename it.

    ``out`` must not exist unless ``overwrite`` (then the old one is replaced only after the new one
    is complete). A crash leaves only a ``.tmp-*`` directory, which never loads as an artifact.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists; choose another --out or remove it first")
    from medslm.outputs import sweep_stale, temp_name

    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    tmp = temp_name(out)
    old = None
    try:
        tmp.mkdir()
        write_fn(tmp)
        meta = ArtifactMeta(
            source=source, steps=steps, parameters=int(parameters), dtype=dtype,
            architecture=architecture, packages=package_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            extra=extra or {},
        )
        meta.content_hash = content_hash(tmp)
        meta.bytes = dir_bytes(tmp)
        meta.files = file_sizes(tmp)
        (tmp / META_FILE).write_text(json.dumps(asdict(meta), indent=2) + "\n")
        from medslm.models.card import CARD, build_card

        (tmp / CARD).write_text(str(build_card(asdict(meta), name=out.name, model_hash=meta.content_hash,
                                               results=[])))
        if out.exists():
            old = temp_name(out, "old")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        if old is not None and old.exists() and not out.exists():  # interrupted mid-swap: the old comes back
            old.rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ModelArtifact(out, meta)
