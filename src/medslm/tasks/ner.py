"""Generative named-entity recognition (NCBI-disease, BC5CDR): the model lists the mentions.

One greedy request per sentence and entity type: the prompt names the type and gives the sentence;
the model answers on one line with the mentions separated by "; " (or "none"), which is also how
fine-tuning writes the target. Scoring is entity-level exact match, as BLURB scores these corpora
but over mention strings (a generative model returns text, not spans): per sentence, predicted and
gold mentions are compared as multisets after whitespace normalization and case folding;
true/false positives and false negatives are summed over the sentences (micro precision, recall
and F1), per type and overall, with bootstrap CIs over sentences.

The parser is strict and its failures are counted, never dropped silently: an item that does not
occur in the sentence (``unfound``) counts as a false positive and is reported, and an empty answer
or one with no item is ``unparsed`` (its gold mentions count as misses).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from medslm.requests import GenerateRequest
from medslm.tasks.base import Task
from medslm.tasks.spec import TaskSpec

NONE = "none"
PLURAL = {"Disease": "diseases", "Chemical": "chemicals"}


def norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def parse(answer: str) -> list[str] | None:
    """The listed mentions; ``[]`` for "none"; ``None`` when the answer lists nothing parseable."""
    line = answer.strip().split("\n", 1)[0].strip().rstrip(".")
    if not line:
        return None
    if norm(line) in (NONE, "none found", "no entities"):
        return []
    items = [x.strip().strip('"').strip() for x in re.split(r";|\|", line)]
    items = [x for x in items if x]
    return items or None


class NERTask(Task):
    def __init__(self, name: str, spec: TaskSpec, *, split: str | None = None, **options: Any):
        self.types = tuple(spec.options["types"])
        metrics = ("f1", "precision", "recall") + tuple(f"f1_{t.lower()}" for t in self.types if len(self.types) > 1)
        super().__init__(name=name, dataset=spec.dataset, split=split or spec.split, family="ner",
                         prompt_version=spec.prompt_version, metrics=metrics + ("unparsed_rate",),
                         description=spec.description, primary="f1", options=options, spec=spec)

    @classmethod
    def from_spec(cls, name: str, spec: TaskSpec, judge: str | None = None, **options: Any) -> "NERTask":
        return cls(name, spec, **options)

    def text(self, e, typ: str) -> str:
        what = PLURAL.get(typ, typ.lower() + "s")
        return (f"List the {what} mentioned in the sentence, separated by semicolons, exactly as written "
                f"(or write none).\nSentence: {e.text}\n{what.capitalize()}:")

    def gold(self, e, typ: str) -> list[str]:
        return [m for t, m in e.mentions if t == typ]

    def train_pair(self, e, explanations: bool = True) -> tuple[str, str]:
        """One type per example (the first with a mention, else the first type); ``train_pairs`` gives all."""
        typ = next((t for t in self.types if self.gold(e, t)), self.types[0])
        return self.text(e, typ), " " + ("; ".join(self.gold(e, typ)) or NONE)

    def train_pairs(self, e) -> list[tuple[str, str]]:
        return [(self.text(e, t), " " + ("; ".join(self.gold(e, t)) or NONE)) for t in self.types]

    def requests(self, e):
        return [GenerateRequest(self.text(e, t), until=("\n",), max_tokens=int(self.options.get("max_tokens", 64)))
                for t in self.types]

    def score(self, e, responses) -> dict[str, Any]:
        sent = norm(e.text)
        rec: dict[str, Any] = {"generation": responses}
        unparsed = 0
        for typ, out in zip(self.types, responses):
            items = parse(out)
            unparsed += items is None
            pred = Counter(norm(x) for x in (items or []))
            gold = Counter(norm(m) for m in self.gold(e, typ))
            tp = sum((pred & gold).values())
            rec[f"tp_{typ}"], rec[f"fp_{typ}"], rec[f"fn_{typ}"] = tp, sum(pred.values()) - tp, sum(gold.values()) - tp
            rec[f"unfound_{typ}"] = sum(n for x, n in pred.items() if x not in sent)
        rec["unparsed"] = unparsed
        return rec

    def aggregate(self, records):
        def prf(tp, fp, fn):
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            return p, r, (2 * p * r / (p + r) if p + r else 0.0)

        sums = {k: sum(r[f"{k}_{t}"] for r in records for t in self.types) for k in ("tp", "fp", "fn", "unfound")}
        p, r, f = prf(sums["tp"], sums["fp"], sums["fn"])
        out = {"f1": f, "precision": p, "recall": r}
        if len(self.types) > 1:
            for t in self.types:
                out[f"f1_{t.lower()}"] = prf(*(sum(x[f"{k}_{t}"] for x in records) for k in ("tp", "fp", "fn")))[2]
        n_req = len(records) * len(self.types)
        out["unparsed_rate"] = sum(x["unparsed"] for x in records) / n_req if n_req else 0.0
        out["unfound_items"] = float(sums["unfound"])
        return out
