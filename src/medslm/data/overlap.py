"""Exact and near-duplicate examples between two sets (contamination guard, split hygiene).

Exact: the same normalized text (lower-case, punctuation and whitespace collapsed). Near: Jaccard
similarity of word 5-gram shingles >= ``threshold`` (0.8 by default), found through an inverted
index on shingles, so it scales to tens of thousands of examples without all-pairs comparison.
Written here rather than taken from a MinHash library: exact Jaccard on candidate pairs is simple,
deterministic and fast enough at these sizes.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def shingles(text: str, n: int = 5) -> set[int]:
    w = normalize(text).split()
    if len(w) < n:
        return {hash(" ".join(w))} if w else set()
    return {hash(" ".join(w[i:i + n])) for i in range(len(w) - n + 1)}


@dataclass
class Match:
    a: str
    b: str
    kind: str  # "exact" | "near"
    similarity: float


def find_overlap(a: list, b: list, threshold: float = 0.8, max_df: int = 50) -> list[Match]:
    """Pairs (a_id, b_id) whose overlap texts are identical or near-identical."""
    exact: dict[str, list[str]] = defaultdict(list)
    for e in b:
        exact[normalize(e.text_for_overlap())].append(e.id)
    bsh = {e.id: shingles(e.text_for_overlap()) for e in b}
    index: dict[int, list[str]] = defaultdict(list)
    for bid, sh in bsh.items():
        for s in sh:
            index[s].append(bid)
    out = []
    for e in a:
        key = normalize(e.text_for_overlap())
        hits = set(exact.get(key, [])) if key else set()
        out += [Match(e.id, bid, "exact", 1.0) for bid in sorted(hits) if bid != e.id or a is not b]
        sh = shingles(e.text_for_overlap())
        if not sh:
            continue
        counts: Counter[str] = Counter()
        for s in sh:
            post = index.get(s, ())
            if len(post) <= max_df:  # very common shingles (boilerplate) do not make candidates
                counts.update(post)
        for bid, c in counts.items():
            if bid in hits or (a is b and bid == e.id):
                continue
            if c / len(sh) < threshold * 0.5:
                continue
            j = len(sh & bsh[bid]) / len(sh | bsh[bid])
            if j >= threshold:
                out.append(Match(e.id, bid, "near", round(j, 3)))
    return out
