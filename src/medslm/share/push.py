"""``medslm push DIR|FILE.gguf REPO_ID``: upload a model with its card to the Hugging Face Hub.

``huggingface_hub`` does the upload (the token from ``--token``, ``HF_TOKEN`` or ``hf auth login``'s
file, as every Hub tool reads it; ``HF_ENDPOINT`` points it at another Hub). Before anything is
sent, the provenance is checked: a model whose steps read credentialed data (MIMIC) or data whose
terms allow evaluation only (AMEGA), or whose base is credentialed (Me-LLaMA), is refused with the
reason, since its weights may carry that data and its terms forbid redistribution. The card is
rebuilt first so the upload carries the current results.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from medslm.errors import MedslmError


def redistribution_problems(meta: dict) -> list[str]:
    """Why this model must not be redistributed (empty: nothing known forbids it)."""
    from medslm.data import DATASETS
    from medslm.models.presets import PRESETS
    from medslm.models.card import _preset, datasets_used

    out = []
    preset = _preset(meta.get("source", ""))
    if preset is not None and preset.local_only:
        out.append(f"its base model {preset.name} is credentialed ({preset.license}); its weights cannot be shared")
    src = meta.get("source", "").lower()
    for p in PRESETS.values():
        if p.local_only and (p.name in src or (p.hub_id or "\0").lower() in src) and p is not preset:
            out.append(f"it derives from {p.name} ({p.license}), which cannot be shared")
    for name in datasets_used(meta.get("steps", [])):
        try:
            spec = DATASETS.get(name)
        except Exception:  # noqa: BLE001 - unknown to this medslm: nothing to check
            continue
        if spec.credentialed:
            out.append(f"a step read {name}, credentialed data ({spec.credentialed.split(';')[0]}); a model "
                       "trained or tuned on it may reproduce it and its data use agreement forbids sharing")
        if spec.eval_only:
            out.append(f"a step read {name}: {spec.eval_only}")
    return out


def stage(path: Path, results: str | None) -> tuple[Path, dict, Path]:
    """(folder to upload, provenance, temporary folder to remove): an artifact goes up as it is (its
    card rebuilt); a GGUF goes up alone, its card as README.md."""
    from medslm.models.card import gguf_card_path
    from medslm.share.card import write_card

    tmp = Path(tempfile.mkdtemp(prefix="medslm-push-"))
    _, meta = write_card(path, results)
    if path.is_dir():
        return path, meta, tmp
    (tmp / path.name).symlink_to(path.resolve())
    shutil.copyfile(gguf_card_path(path), tmp / "README.md")
    return tmp, meta, tmp


def push(path: str | Path, repo_id: str, *, token: str | None = None, private: bool = True,
         results: str | None = None, message: str | None = None) -> dict:
    from huggingface_hub import HfApi

    p = Path(path)
    if not p.exists():
        raise MedslmError(f"medslm push: {p} does not exist")
    folder, meta, tmp = stage(p, results)
    try:
        problems = redistribution_problems(meta)
        if problems:
            raise MedslmError(f"medslm push: {p} may not be redistributed: " + "; ".join(problems))
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=message or f"medslm: upload {p.name}",
                                 ignore_patterns=[".*", "*.tmp-*", "*.lock"])
        return {"repo_id": repo_id, "folder": str(folder), "commit": str(getattr(info, "oid", info))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
