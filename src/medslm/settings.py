"""Where medslm keeps things: the cache and the data mirror, from the environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``MEDSLM_CACHE``, default ``~/.cache/medslm``."""
    root = os.environ.get("MEDSLM_CACHE") or os.path.join(Path.home(), ".cache", "medslm")
    return Path(root).expanduser()


def data_dir() -> Path | None:
    """The local data mirror named by ``MEDSLM_DATA_DIR`` (layout ``<dataset>/<upstream files>``)."""
    root = os.environ.get("MEDSLM_DATA_DIR")
    return Path(root).expanduser() if root else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
