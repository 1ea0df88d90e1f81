"""Multiple choice, scored exactly as lm-evaluation-harness scores it.

Prediction = argmax over choices of loglik(context, " " + choice); ``acc`` and ``acc_norm`` (loglik
divided by the choice's length in characters). Prompts are lm-eval's for the same tasks:

- pubmedqa: ``"Abstract: " + "\\n".join(CONTEXTS) + "\\nQuestion: " + QUESTION + "\\nAnswer:"``,
  choices yes/no/maybe (+ macro-F1, the official PubMedQA metric)
- medmcqa: ``"Question: {q}\\nChoices:\\nA. {opa}\\nB. {opb}\\nC. {opc}\\nD. {opd}\\nAnswer:"``
- medqa_4options: ``"Question: {q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"``
- mmlu_<subject>: ``"The following are multiple choice questions (with answers) about
  <subject>.\\n\\n{q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"``

Few-shot (``fewshot=k``): k examples from the train/dev split, drawn with the seed, each rendered
as its prompt followed by " " + its answer, joined by blank lines (lm-eval's default format).
``*_cot`` variants generate greedily and parse "Answer: X" (or the last option mentioned).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from medslm.requests import GenerateRequest, LoglikelihoodRequest
from medslm.tasks.base import Task
from medslm.tasks.spec import TaskSpec, render

def macro_f1(golds: list[int], preds: list[int], n: int) -> float:
    f1s = []
    for c in range(n):
        tp = sum(1 for g, p in zip(golds, preds) if g == c and p == c)
        fp = sum(1 for g, p in zip(golds, preds) if g != c and p == c)
        fn = sum(1 for g, p in zip(golds, preds) if g == c and p != c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / n


def expected_calibration_error(records: list[dict], bins: int = 10) -> float:
    """ECE of the max softmax probability over the choices (equal-width bins)."""
    conf = [(max(r["probs"]), r["acc"]) for r in records if r.get("probs")]
    if not conf:
        return float("nan")
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inb = [(c, a) for c, a in conf if lo < c <= hi or (b == 0 and c == 0)]
        if inb:
            total += len(inb) / len(conf) * abs(sum(c for c, _ in inb) / len(inb) -
                                                sum(a for _, a in inb) / len(inb))
    return total


class MultipleChoiceTask(Task):
    def __init__(self, name: str, spec: TaskSpec, *, cot: bool = False, split: str | None = None,
                 **options: Any):
        metrics = ("acc",) if cot else ("acc", "acc_norm", "ece")
        metrics += tuple(spec.metrics)
        super().__init__(name=name, dataset=spec.dataset, split=split or spec.split,
                         family="multiple_choice_cot" if cot else "multiple_choice",
                         prompt_version=spec.prompt_version, metrics=metrics, description=spec.description,
                         primary="acc", fewshot_split=spec.fewshot_split, options=options, spec=spec)
        self.choices = spec.choices  # fixed labels (A-D) or None = the example's own options
        self.subject = spec.subject
        self.cot = cot
        self.header = (f"The following are multiple choice questions (with answers) about "
                       f"{self.subject.replace('_', ' ')}.\n\n") if self.subject else ""
        self.shots: list = []

    @classmethod
    def from_spec(cls, name: str, spec: TaskSpec, judge: str | None = None, **options: Any) -> "MultipleChoiceTask":
        return cls(name, spec, cot=name.endswith("_cot"), **options)

    def text(self, e) -> str:
        """The question as lm-evaluation-harness renders it (without the subject header or shots)."""
        return render(self.spec.prompt, e)

    def train_pair(self, e, explanations: bool = True) -> tuple[str, str]:
        """(prompt, target) for fine-tuning: the answer's label, then its explanation if asked."""
        target = " " + self.labels(e)[e.answer]
        fmt = self.spec.train or {}
        if explanations:
            exp = next((e.meta.get(f) for f in fmt.get("explanation", ()) if e.meta.get(f)), "") or ""
            if exp.strip():
                target += "\n" + fmt.get("prefix", "") + exp.strip()
        return self.text(e), target

    def keep(self, e) -> bool:
        if e.answer is None:
            return False
        return self.subject is None or e.meta.get("subject") == self.subject

    def labels(self, e) -> list[str]:
        return list(self.choices) if self.choices else list(e.options)

    def prepare(self, examples, fewshot=0, seed=1234, path=None) -> None:
        self.shots = []
        if fewshot <= 0:
            return
        if not self.fewshot_split:
            from medslm.errors import MedslmError

            raise MedslmError(f"{self.name}: --fewshot {fewshot}: this task has no split to draw few-shot "
                              "examples from; use --fewshot 0")
        from medslm.errors import DataError, MedslmError

        try:
            pool = [e for e in self.load(self.fewshot_split, path) if self.keep(e)]
        except DataError as e:
            raise MedslmError(f"{self.name}: --fewshot {fewshot} draws its examples from split "
                              f"{self.fewshot_split!r}, which cannot be read here ({e}); use --fewshot 0, "
                              "or give the dataset with that split through --data") from None
        ids = {e.id for e in examples}
        pool = [e for e in pool if e.id not in ids]
        if len(pool) < fewshot:
            raise MedslmError(f"{self.name}: --fewshot {fewshot} but split {self.fewshot_split!r} has "
                              f"only {len(pool)} usable examples; choose --fewshot {len(pool)} or fewer")
        self.shots = random.Random(seed).sample(pool, fewshot)

    def prompt(self, e) -> str:
        shots = "".join(f"{self.text(s)} {self.labels(s)[s.answer]}\n\n" for s in self.shots)
        return self.header + shots + self.text(e)

    def requests(self, e):
        if self.cot:
            p = self.prompt(e)
            return [GenerateRequest(p[: -len("Answer:")] + "Let's think step by step, then give the "
                                    "final answer as 'Answer: X'.\n", until=("\n\nQuestion:",),
                                    max_tokens=int(self.options.get("max_tokens", 256)))]
        ctx = self.prompt(e)
        return [LoglikelihoodRequest(ctx, " " + c) for c in self.labels(e)]

    def parse(self, e, text: str) -> int | None:
        labels = self.labels(e)
        pat = "|".join(re.escape(x) for x in labels)
        m = re.findall(rf"[Aa]nswer\s*(?:is)?\s*[:\-]?\s*\(?({pat})\b", text)
        if not m:
            m = re.findall(rf"\b({pat})\b", text)
        return labels.index(m[-1]) if m else None

    def score(self, e, responses) -> dict[str, Any]:
        if self.cot:
            pred = self.parse(e, responses[0])
            return {"acc": float(pred == e.answer), "pred": pred, "gold": e.answer,
                    "n_options": len(self.labels(e)), "generation": responses[0]}
        lls = [r[0] for r in responses]
        labels = self.labels(e)
        pred = max(range(len(lls)), key=lambda i: lls[i])
        normed = [ll / len(c) for ll, c in zip(lls, labels)]
        pred_n = max(range(len(lls)), key=lambda i: normed[i])
        mx = max(lls)
        z = sum(math.exp(x - mx) for x in lls)
        probs = [math.exp(x - mx) / z for x in lls]
        return {"acc": float(pred == e.answer), "acc_norm": float(pred_n == e.answer), "pred": pred,
                "gold": e.answer, "loglik": lls, "probs": probs}

    def aggregate(self, records):
        out = {"acc": sum(r["acc"] for r in records) / len(records)}
        if not self.cot:
            out["acc_norm"] = sum(r["acc_norm"] for r in records) / len(records)
            out["ece"] = expected_calibration_error(records)
        if "macro_f1" in self.metrics:  # over every class the choices offer (3 for PubMedQA, 5 for ChemProt)
            n = max(r.get("n_options") or len(r.get("loglik") or ()) for r in records)
            out["macro_f1"] = macro_f1([r["gold"] for r in records],
                                       [-1 if r["pred"] is None else r["pred"] for r in records], n)
        return out
