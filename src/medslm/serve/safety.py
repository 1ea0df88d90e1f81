"""An offline redactor for structured identifiers in clinical text.

Covers the HIPAA Safe Harbor identifiers that have a recognisable *shape*: dates (all elements but
the year), ages over 89, phone and fax numbers, e-mail addresses, SSNs, labelled record numbers
(MRN, account, health-plan / member, licence / DEA / NPI), URLs, IP addresses, and ZIP codes with
context (a "ZIP" label or a state abbreviation before them). Regular expressions plus context
words; no model, no download, so it runs anywhere the server does.

Not covered offline: **names and street addresses** (they need a trained NER model; Presidio or
Philter with a clinical model is the tool for them). Years alone, doses, lab values, vital signs,
ratios and ranges are left alone by design (measured in ``tests/test_safety.py``).

Why our own: Presidio's recognisers for these entities are regexes of the same kind, but it pulls
in spaCy and expects a language model download for its default pipeline; this module is the small
subset a private server needs, with the medical false positives (BP 120/80, "3.5-5.0 mmol/L")
handled explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_ORD = r"(?:st|nd|rd|th)?"
_M = r"(?:0?[1-9]|1[0-2])"
_D = r"(?:0?[1-9]|[12]\d|3[01])"
_Y = r"(?:19|20)\d{2}"

_LABEL = (r"(?:MRN|medical\s+record\s+(?:number|no\.?|#)|record\s+(?:number|no\.?|#)|"
          r"acc(?:oun)?t\.?\s*(?:number|no\.?|#)?|account|"
          r"(?:health\s+)?plan\s+(?:beneficiary\s+)?(?:number|no\.?|id|#)|member\s+(?:id|number|no\.?|#)|"
          r"policy\s+(?:number|no\.?|#)|insurance\s+(?:id|number|no\.?)|"
          r"licen[cs]e\s+(?:number|no\.?|#)|DEA\s*(?:number|no\.?|#)?|NPI|"
          r"certificate\s+(?:number|no\.?|#)|device\s+serial\s+(?:number|no\.?|#)|serial\s+(?:number|no\.?|#))")

# (category, pattern, group holding the identifier)
_RULES: list[tuple[str, re.Pattern, int]] = [
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), 0),
    ("URL", re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]*[^\s<>\"')\].,;:!?]"), 0),
    ("IP", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                      r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]*\d)"), 0),
    ("IP", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"), 0),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), 0),
    ("SSN", re.compile(r"\b(?:SSN|social\s+security(?:\s+(?:number|no\.?|#))?)\s*[:#]?\s*(\d{3}\s?\d{2}\s?\d{4})\b",
                       re.I), 1),
    ("ID", re.compile(r"\b" + _LABEL + r"\s*(?:is\s+)?[:#]?\s*((?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{3,})\b", re.I), 1),
    ("PHONE", re.compile(r"(?<![\w-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])"), 0),
    ("PHONE", re.compile(r"\b(?:phone|tel|telephone|fax|cell|mobile|pager|call|ext)\.?\s*(?:number|no\.?|#)?\s*"
                         r"[:#]?\s*(\d{3}[\s.-]\d{4})\b", re.I), 1),
    ("DATE", re.compile(r"\b" + _M + r"[/-]" + _D + r"[/-](?:" + _Y + r"|\d{2})\b"), 0),
    ("DATE", re.compile(r"\b" + _Y + r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"), 0),
    ("DATE", re.compile(r"\b" + _D + r"\s+" + _MONTH + r"\.?,?\s+" + _Y + r"\b"), 0),
    ("DATE", re.compile(r"\b" + _MONTH + r"\.?\s+" + _D + _ORD + r"(?:,?\s+" + _Y + r")?\b"), 0),
    ("DATE", re.compile(r"\b(?:on|dated|DOB|born|since|admitted|discharged|seen)\s*:?\s*(" + _M + r"/" + _D
                        + r")(?![/\d])", re.I), 1),
    ("AGE", re.compile(r"\b((?:9\d|1[0-4]\d)(?:[\s-]*(?:years?|yrs?)[\s-]*old|\s?(?:yo|y/o|y\.o\.)(?!\w)|"
                       r"[\s-]+year[\s-]+old))", re.I), 1),
    ("AGE", re.compile(r"\b(?:age[d]?|aged)\s*:?\s*((?:9\d|1[0-4]\d))\b(?!\s*(?:mg|ml|%|mmHg|kg|bpm))", re.I), 1),
    ("ZIP", re.compile(r"\b(?:ZIP|zip\s*code|postal\s+code)\s*[:#]?\s*(\d{5}(?:-\d{4})?)\b", re.I), 1),
    ("ZIP", re.compile(r",\s*(?:A[LKZR]|C[AOT]|D[EC]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|"
                       r"O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY])\s+(\d{5}(?:-\d{4})?)\b"), 1),
]

CATEGORIES = ("DATE", "AGE", "PHONE", "EMAIL", "SSN", "ID", "URL", "IP", "ZIP")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    category: str


def find(text: str) -> list[Span]:
    """Identifier spans, longest first where they overlap, in text order."""
    spans: list[Span] = []
    for cat, rx, g in _RULES:
        for m in rx.finditer(text):
            s, e = m.span(g)
            if e > s:
                spans.append(Span(s, e, cat))
    spans.sort(key=lambda x: (x.start, -(x.end - x.start)))
    out: list[Span] = []
    for sp in spans:
        if out and sp.start < out[-1].end:
            if sp.end > out[-1].end:  # overlapping: keep one span covering both
                out[-1] = Span(out[-1].start, sp.end, out[-1].category)
            continue
        out.append(sp)
    return out


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace every identifier with a typed placeholder (``[DATE]``, ``[PHONE]``, ...).

    Returns the new text and the count per category (never the identifiers themselves).
    """
    counts: dict[str, int] = {}
    parts, pos = [], 0
    for sp in find(text):
        parts.append(text[pos:sp.start])
        parts.append(f"[{sp.category}]")
        counts[sp.category] = counts.get(sp.category, 0) + 1
        pos = sp.end
    parts.append(text[pos:])
    return "".join(parts), counts
