"""Test helpers: tiny random models (tiny), files in upstream formats (fixtures), a scripted server
(serving). ``tests/`` is on the import path through pytest's ``pythonpath`` setting; a subprocess
gets it from :func:`env`."""

import os
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent)


def env(**extra: str) -> dict:
    """This process's environment, with ``tests/`` on PYTHONPATH (so ``import helpers`` works)."""
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)
