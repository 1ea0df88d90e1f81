"""Seeded carving of a split into a training part and a held-out dev part.

Many medical benchmarks ship only an evaluation split (the mirror's PubMedQA holds 500 labelled
records, its MedMCQA only the 3,183-question dev set). To fine-tune *and* measure honestly, carve
the split in two: ``fit@N`` is everything but ``N`` records, ``dev@N`` those ``N``. Written as a
split name wherever a split is accepted::

    pubmedqa:fit@50          # 450 records to train on
    pubmedqa:dev@50          # the other 50, to evaluate on (medslm eval --split dev@50)
    medmcqa:validation/fit@500~7   # explicit source split and seed (default: the task's split, seed 1234)

The order is by SHA-256 of ``"{seed}:{record id}"``: machine-independent, stable when records are
added elsewhere, and the same for training and evaluation, so ``fit@N`` and ``dev@N`` never share a
record. The resolved name (source split, N, seed) is recorded in results and artifacts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DEFAULT_SEED = 1234
_CARVE = re.compile(r"^(?:(?P<src>[A-Za-z0-9_\-]+)/)?(?P<part>fit|dev)@(?P<n>\d+)(?:~(?P<seed>\d+))?$")


@dataclass(frozen=True)
class Carve:
    source: str | None  # None: the task's own evaluation split
    part: str  # "fit" | "dev"
    n_dev: int
    seed: int = DEFAULT_SEED

    def name(self, source: str | None = None) -> str:
        return f"{source or self.source or '?'}/{self.part}@{self.n_dev}~{self.seed}"

    def other(self) -> "Carve":
        return Carve(self.source, "dev" if self.part == "fit" else "fit", self.n_dev, self.seed)


def parse_carve(split: str | None) -> Carve | None:
    """``fit@N`` / ``dev@N`` (optionally ``SRC/`` before and ``~SEED`` after) -> Carve, else None."""
    if not split:
        return None
    m = _CARVE.match(split)
    if not m:
        return None
    return Carve(m["src"], m["part"], int(m["n"]), int(m["seed"]) if m["seed"] else DEFAULT_SEED)


def carve(examples: list, c: Carve, where: str = "") -> list:
    """The ``c.part`` of ``examples`` (see the module doc). ``N`` must leave both parts non-empty."""
    from medslm.errors import DataError

    if not 0 < c.n_dev < len(examples):
        raise DataError(f"{where or 'split'} {c.part}@{c.n_dev}: the source split has {len(examples)} "
                        f"usable records; N must be between 1 and {len(examples) - 1}")
    order = sorted(examples, key=lambda e: hashlib.sha256(f"{c.seed}:{e.id}".encode()).hexdigest())
    dev_ids = {e.id for e in order[:c.n_dev]}
    keep = (lambda e: e.id in dev_ids) if c.part == "dev" else (lambda e: e.id not in dev_ids)
    return [e for e in examples if keep(e)]  # the source order, not the hash order
