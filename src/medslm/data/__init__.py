"""Datasets: one loader per dataset, all yielding typed Example records.

    >>> from medslm.data import load_dataset
    >>> test = load_dataset("pubmedqa", split="test")
    >>> test[0].question, test[0].options, test[0].answer

``load_dataset(name, split=None, path=None, lenient=False)``: ``split=None`` returns every record
available. Strict loading raises one :class:`~medslm.errors.DataError` naming the file, record and
field; ``lenient=True`` skips bad records and reports how many and why (``result.skipped``).
"""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

from medslm.data.examples import (Classification, Criterion, Document, Entities, Example, MultipleChoice,
                                  OpenQA, Rubric)
from medslm.registry import Registry

# every module of this package is a dataset (its SPEC), named as the module, except these helpers;
# found by file name, so listing datasets imports none of them
HELPERS = {"examples", "iob", "overlap", "reader", "sources", "splits"}
DATASETS = Registry("dataset")
for _m in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _m.name not in HELPERS and not _m.name.startswith("_"):
        DATASETS.add(_m.name, f"medslm.data.{_m.name}:SPEC")


class Examples(list):
    """A list of Examples, with where they came from and what was skipped."""

    root: Path
    skipped: dict
    name: str


def get_spec(name: str):
    return DATASETS.get(name)


def load_dataset(name: str, split: str | None = None, path: str | None = None,
                 lenient: bool = False, fetch: bool = True) -> Examples:
    from medslm.data.reader import Reader
    from medslm.data.sources import find_root

    spec = get_spec(name)
    root = find_root(spec, path, fetch=fetch)
    reader = Reader(name, lenient=lenient)
    out = Examples(spec.load(root, split, reader))
    out.root, out.skipped, out.name = root, dict(reader.skipped), name
    if reader.skipped:
        print(reader.summary(), file=sys.stderr)
    return out


__all__ = ["DATASETS", "Classification", "Criterion", "Document", "Entities", "Example", "Examples",
           "MultipleChoice", "OpenQA", "Rubric", "get_spec", "load_dataset"]
