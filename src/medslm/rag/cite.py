"""Every ``[n]`` in an answer must resolve to a returned citation.

Markers that point nowhere (``[7]`` with four sources, ``[0]``) are removed and counted, so a
reader never follows a citation to nothing. ``[1, 3]`` and ``[1][3]`` forms are checked per number.
"""

from __future__ import annotations

import re

_MARK = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def check_citations(text: str, n_sources: int) -> tuple[str, int]:
    """(text with invalid markers removed, how many numbers were invalid)."""
    invalid = 0

    def fix(m: re.Match) -> str:
        nonlocal invalid
        nums = [int(x) for x in m.group(1).split(",")]
        ok = [x for x in nums if 1 <= x <= n_sources]
        invalid += len(nums) - len(ok)
        return f"[{', '.join(map(str, ok))}]" if ok else ""

    out = _MARK.sub(fix, text)
    if invalid:
        out = re.sub(r"[ \t]{2,}", " ", out).replace(" .", ".").replace(" ,", ",")
    return out, invalid


def cited(text: str) -> set[int]:
    return {int(x) for m in _MARK.finditer(text) for x in m.group(1).split(",")}
