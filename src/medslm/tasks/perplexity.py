"""``medppl``: perplexity on held-out medical text, the most sensitive signal of what compression
removes from medicine.

Documents: MedQuAD answers (``test`` split, answered pairs) and PubMedQA abstracts (their CONTEXTS
joined). Each is scored with ``loglikelihood_rolling``. Reported like lm-evaluation-harness:
``word_perplexity`` = exp(-sum loglik / sum words) (the headline ``medppl``; tokenizer-independent, so
a trimmed vocabulary compares fairly), ``byte_perplexity`` and ``bits_per_byte``.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from medslm.requests import RollingRequest
from medslm.data.examples import Document
from medslm.tasks.base import Task
from medslm.tasks.spec import TaskSpec


class MedPPL(Task):
    def __init__(self, name: str, spec: TaskSpec, **options: Any):
        super().__init__(name=name, dataset=spec.dataset, split=spec.split, family="perplexity",
                         prompt_version=spec.prompt_version,
                         metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
                         description=spec.description, primary="word_perplexity", options=options, spec=spec)

    @classmethod
    def from_spec(cls, name: str, spec: TaskSpec, judge: str | None = None, **options: Any) -> "MedPPL":
        options.pop("split", None)
        return cls(name, spec, **options)

    def examples(self, split=None, limit=None, seed=1234, path=None):
        from medslm.data import load_dataset
        from medslm.errors import DataError

        docs = []
        try:
            for e in load_dataset("medquad", split="test"):
                if e.meta.get("answered"):
                    docs.append(Document(id=e.id, split="test", text=e.answer, source="medquad"))
        except DataError:
            pass
        from medslm.data.splits import parse_carve

        carved = parse_carve(split)
        pq_split = "pubmedqa"
        try:
            if carved is not None:  # dev@N: only the PubMedQA abstracts of that carve (held out of training)
                from medslm.tasks import get_task

                pq_task = get_task("pubmedqa")
                test = pq_task.examples(split)
                pq_split = f"pubmedqa:{pq_task.resolved_split}"
            else:
                pq = load_dataset("pubmedqa")
                test = [e for e in pq if e.split == "test"] or pq
            docs += [Document(id=e.id, split=e.split, text=e.context, source="pubmedqa") for e in test]
        except DataError:
            if carved is not None:
                raise
        if not docs:
            raise DataError("medppl needs medquad or pubmedqa: set MEDSLM_DATA_DIR to a data mirror")
        self.resolved_split = f"medquad:test+{pq_split}"
        # a balanced, seeded subset: the same documents for every model
        if limit is not None and limit < len(docs):
            rng = random.Random(seed)
            by = {s: [d for d in docs if d.source == s] for s in ("medquad", "pubmedqa")}
            take = {s: min(len(v), limit // 2 if all(by.values()) else limit) for s, v in by.items()}
            docs = [d for s, v in by.items() for d in sorted(rng.sample(v, take[s]), key=lambda d: d.id)]
        return docs

    def requests(self, e):
        return [RollingRequest(e.text)]

    def score(self, e, responses) -> dict[str, Any]:
        ll = responses[0]
        return {"loglik": ll, "words": len(re.findall(r"\S+", e.text)),
                "bytes": len(e.text.encode("utf-8")), "source": e.source}

    def aggregate(self, records):
        ll = sum(r["loglik"] for r in records)
        words = sum(r["words"] for r in records)
        nbytes = sum(r["bytes"] for r in records)
        return {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / nbytes),
                "bits_per_byte": -ll / nbytes / math.log(2)}
