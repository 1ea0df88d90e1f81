"""The typed records every dataset loader yields.

Each Example has a stable ``id`` (the same record gets the same id in every run and on every
machine), its ``split``, and the dataset's own fields in ``meta``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(kw_only=True)
class Example:
    id: str
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    kind = "example"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def text_for_overlap(self) -> str:
        """The text two datasets must not share (used by the contamination/overlap check)."""
        raise NotImplementedError


@dataclass(kw_only=True)
class MultipleChoice(Example):
    question: str
    options: list[str]
    answer: int | None  # index into options; None when unlabelled (PQA-U, hidden test labels)
    context: str = ""
    kind = "multiple_choice"

    def text_for_overlap(self) -> str:  # the options too: one stem with other options is another item
        return "\n".join([self.context or "", self.question, *map(str, self.options)]).strip()


@dataclass(kw_only=True)
class OpenQA(Example):
    question: str
    answer: str
    source: str = ""
    kind = "open_qa"

    def text_for_overlap(self) -> str:
        return self.question


@dataclass(kw_only=True)
class Criterion:
    text: str
    weight: float
    section: str = ""


@dataclass(kw_only=True)
class Rubric(Example):
    case: str
    question: str
    criteria: list[Criterion]
    kind = "rubric"

    def text_for_overlap(self) -> str:
        return f"{self.case}\n{self.question}"


@dataclass(kw_only=True)
class Classification(Example):
    text: str
    label: int | str | None = None
    score: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    kind = "classification"

    def text_for_overlap(self) -> str:
        return self.text


@dataclass(kw_only=True)
class Document(Example):
    text: str
    title: str = ""
    source: str = ""
    kind = "document"

    def text_for_overlap(self) -> str:
        return self.text


@dataclass(kw_only=True)
class Entities(Example):
    """A tokenized sentence with its entity mentions (from IOB tags): ``mentions`` holds
    ``(type, text)`` pairs in order, the text being the mention's tokens joined by spaces."""

    tokens: list[str]
    tags: list[str]
    mentions: list[tuple[str, str]] = field(default_factory=list)
    kind = "entities"

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def text_for_overlap(self) -> str:
        return self.text
