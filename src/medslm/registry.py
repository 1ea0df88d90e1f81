"""Lazy registries keyed by name.

A registry maps a name to a ``"module:attr"`` string, so listing names (``--help``, ``ls``) never
imports the heavy module behind an entry. An unknown name gets near matches and the full list; a
duplicate name is an error.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from medslm.errors import MedslmError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}

    def add(self, name: str, target: str) -> None:
        if name in self._targets:
            raise ValueError(f"duplicate {self.kind} name {name!r} (already {self._targets[name]})")
        if ":" not in target:
            raise ValueError(f"{self.kind} target must be 'module:attr', got {target!r}")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def unknown(self, name: str) -> MedslmError:
        near = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        return MedslmError(
            f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.names())}"
        )

    def get(self, name: str) -> Any:
        if name not in self._targets:
            raise self.unknown(name)
        if name not in self._loaded:
            module, attr = self._targets[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]
