"""Which model ``medslm serve`` runs when no ``--model`` is given.

A recipe that names a variant under ``serve:`` (``recipes/medical-assistant.yaml`` names its shipped
GGUF) registers that variant's model here when its run finishes: one JSON file in the medslm cache
(``served.json``), the newest entry first. ``serve`` without ``--model`` takes the newest entry whose
file still exists and whose bytes still hash as registered; without one it serves the embedded base
and says on start-up that the base is not instruction-tuned.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

BASE = "gemma3-270m"
BASE_NOTE = ("serving the embedded base gemma3-270m: a pretrained model, not instruction-tuned; it continues "
             "text rather than answering. Build the medical assistant with `medslm run "
             "recipes/medical-assistant.yaml` (about an hour on 2 cores) and `medslm serve` serves it.")


def registry() -> Path:
    from medslm import settings

    return settings.cache_dir() / "served.json"


def _entries() -> list[dict]:
    f = registry()
    if not f.is_file():
        return []
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError:
        return []  # a damaged registry only loses the default; serve says what it serves
    return [e for e in data.get("models", []) if isinstance(e, dict) and e.get("path")]


def register(path: str | Path, *, recipe: str, variant: str, run: str | Path) -> dict:
    """Record ``path`` (a GGUF file or an artifact directory) as the newest model to serve."""
    from medslm.outputs import replace_file
    from medslm.system import sha256_file

    p = Path(path).resolve()
    entry = {"path": str(p), "recipe": recipe, "variant": variant, "run": str(Path(run).resolve()),
             "sha256": sha256_file(p) if p.is_file() else None,
             "registered": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    rest = [e for e in _entries() if e.get("path") != entry["path"]]
    replace_file(registry(), json.dumps({"models": [entry, *rest][:20]}, indent=1) + "\n")
    return entry


def default_model() -> tuple[str, str]:
    """(model reference, what to say on start-up)."""
    from medslm.system import sha256_file

    for e in _entries():
        p = Path(e["path"])
        if not p.exists() or (p.is_file() and e.get("sha256") and sha256_file(p) != e["sha256"]):
            continue  # moved, deleted or replaced since the run registered it
        return str(p), (f"serving {p} (variant {e.get('variant')} of recipe {e.get('recipe')}, "
                        f"run {e.get('run')}); pass --model to serve another")
    return BASE, BASE_NOTE
