"""Hugging Face Hub access shared by data sources and model resolution."""

from __future__ import annotations

import os


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
