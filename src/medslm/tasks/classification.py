"""Classification by option log-likelihoods: ``drugcomb_synergy`` and ``mimic3_mortality``.

The record is serialized as text, followed by a question; P(yes) = softmax over the log-likelihoods
of " yes" and " no". Predicted positive when P(yes) > 0.5 (the stated threshold). k-shot examples
(``fewshot``) come from the train split, balanced between classes. Metrics: AUROC, AUPRC (average
precision) and accuracy; AUROC/AUPRC use P(yes) as the score, so they do not depend on the threshold.

- drugcomb_synergy (CancerGPT-style): "Drug A: .. Drug B: .. Cell line: .. [Tissue: ..]
  Is this drug combination synergistic? Answer:" with label = synergy score > 30 (DeepSynergy).
- mimic3_mortality: the admission summary, "Did the patient die in the hospital? Answer:".
"""

from __future__ import annotations

import math
import random
from typing import Any

from medslm.requests import LoglikelihoodRequest
from medslm.tasks.base import Task
from medslm.tasks.spec import TaskSpec

THRESHOLD = 0.5


def auroc(y: list[int], s: list[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    pairs = sorted(zip(s, y))
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(y)
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    rsum = sum(r for r, (_, lab) in zip(ranks, pairs) if lab == 1)
    return (rsum - pos * (pos + 1) / 2) / (pos * neg)


def auprc(y: list[int], s: list[float]) -> float:
    """Average precision: mean of the precision at each positive, ranked by score."""
    order = sorted(range(len(y)), key=lambda i: -s[i])
    tp = 0
    total = 0.0
    for k, i in enumerate(order, 1):
        if y[i] == 1:
            tp += 1
            total += tp / k
    return total / tp if tp else float("nan")


class YesNoTask(Task):
    def __init__(self, name: str, spec: TaskSpec, **options: Any):
        super().__init__(name=name, dataset=spec.dataset, split=spec.split, family="classification",
                         prompt_version=spec.prompt_version, metrics=("auroc", "auprc", "acc"),
                         description=spec.description, primary="auroc", fewshot_split=spec.fewshot_split,
                         options=options, spec=spec)
        self.question = spec.options["question"]
        self.shots: list = []

    @classmethod
    def from_spec(cls, name: str, spec: TaskSpec, judge: str | None = None, **options: Any) -> "YesNoTask":
        options.pop("split", None)
        return cls(name, spec, **options)

    def prepare(self, examples, fewshot=0, seed=1234, path=None) -> None:
        self.shots = []
        if fewshot > 0:
            pool = self.load("train", path)
            rng = random.Random(seed)
            pos = [e for e in pool if e.label == 1]
            neg = [e for e in pool if e.label == 0]
            k1 = fewshot // 2
            self.shots = rng.sample(pos, min(k1, len(pos))) + rng.sample(neg, min(fewshot - k1, len(neg)))
            rng.shuffle(self.shots)

    def text(self, e) -> str:
        return f"{e.text}\n{self.question}\nAnswer:"

    def requests(self, e):
        shots = "".join(f"{self.text(s)} {'yes' if s.label else 'no'}\n\n" for s in self.shots)
        ctx = shots + self.text(e)
        return [LoglikelihoodRequest(ctx, " yes"), LoglikelihoodRequest(ctx, " no")]

    def score(self, e, responses) -> dict[str, Any]:
        ly, ln = responses[0][0], responses[1][0]
        p = 1 / (1 + math.exp(ln - ly))
        return {"p_yes": p, "gold": int(e.label), "acc": float((p > THRESHOLD) == bool(e.label))}

    def aggregate(self, records):
        y = [r["gold"] for r in records]
        s = [r["p_yes"] for r in records]
        return {"auroc": auroc(y, s), "auprc": auprc(y, s),
                "acc": sum(r["acc"] for r in records) / len(records)}
