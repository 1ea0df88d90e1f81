"""``medslm card``: rebuild an artifact's model card with the results recorded on it (the builder is
:mod:`medslm.models.card`)."""

from __future__ import annotations

import json
from pathlib import Path

from medslm.models.card import CARD, build_card, matching_results


def write_artifact_card(path: str | Path, results: str | Path | None = None) -> Path:
    """(Re)write ``README.md`` of the artifact at ``path`` (results matched by its hash)."""
    from medslm.models.artifact import ModelArtifact

    art = ModelArtifact.open(path)
    meta = json.loads((art.path / "medslm.json").read_text())
    card = build_card(meta, name=art.path.name, model_hash=art.hash,
                      results=matching_results(Path(results) if results else None, art.hash))
    from medslm.outputs import replace_file

    return replace_file(art.path / CARD, str(card))


def gguf_provenance(gguf: Path) -> dict:
    """The provenance a GGUF export recorded in its sidecar (``FILE.gguf.medslm.json``)."""
    from medslm.errors import MedslmError
    from medslm.export.gguf import sidecar

    side = sidecar(gguf)
    if not side.is_file():
        raise MedslmError(f"{gguf}: no {side.name}, so its provenance is unknown; export it with `medslm export`, "
                          "which records it")
    info = json.loads(side.read_text())
    return {"type": info.get("type"),
            "meta": info.get("source_meta") or {"source": info.get("source", ""), "steps": info.get("steps", [])}}


def write_card(path: str | Path, results: str | Path | None = None) -> tuple[Path, dict]:
    """(card written, provenance) for an artifact directory or an exported GGUF."""
    from medslm.errors import MedslmError
    from medslm.models.card import write_gguf_card

    p = Path(path)
    if p.is_dir():
        out = write_artifact_card(p, results)
        return out, json.loads((p / "medslm.json").read_text())
    if p.suffix == ".gguf" and p.is_file():
        g = gguf_provenance(p)
        return write_gguf_card(p, g["meta"], results, g["type"]), g["meta"]
    raise MedslmError(f"{p}: give a medslm artifact directory or an exported .gguf file")
