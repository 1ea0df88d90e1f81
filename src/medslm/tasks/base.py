"""A Task: dataset + split + versioned prompt + requests + per-example scoring + aggregation.

The runner asks a task for its examples, turns each into backend requests, sends the unique
requests to the backend (with caching), hands each example its responses to ``score``, and calls
``aggregate`` on the per-example records (also on bootstrap resamples, for confidence intervals).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from medslm.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest
from medslm.registry import Registry

Request = LoglikelihoodRequest | RollingRequest | GenerateRequest


@dataclass
class Task:
    name: str
    dataset: str
    split: str
    family: str
    prompt_version: str
    metrics: tuple[str, ...]
    description: str = ""
    primary: str = "acc"
    fewshot_split: str | None = None
    approximate: str = ""  # set when a metric is an approximation, printed with results
    options: dict[str, Any] = field(default_factory=dict)
    resolved_split: str | None = None
    lenient: bool = False  # skip malformed records (counted and reported) instead of failing
    spec: Any = None  # the benchmark's TaskSpec (medslm.tasks.spec)
    _examples: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ data
    def load(self, split: str | None = None, path: str | None = None) -> list:
        """Records of ``split`` (default the task's). ``auto``: the test split when the data has
        one, else train (PubMedQA's mirror holds only the non-test half); the choice is recorded."""
        from medslm.data import load_dataset
        from medslm.data.splits import carve, parse_carve

        split = split or self.split
        c = parse_carve(split)
        if c is not None:  # fit@N / dev@N: carve the source split (the task's own by default)
            src = c.source or self.split
            recs = [e for e in self.load(src, path) if self.keep(e)]
            src = self.resolved_split or src
            out = carve(recs, c, f"{self.name} split")
            self.resolved_split = c.name(src)
            return out
        if split == "auto":
            every = list(load_dataset(self.dataset, split=None, path=path, lenient=self.lenient))
            split = "test" if any(e.split == "test" for e in every) else "train"
            self.resolved_split = split
            return [e for e in every if e.split == split]
        self.resolved_split = split
        return list(load_dataset(self.dataset, split=split, path=path, lenient=self.lenient))

    def examples(self, split: str | None = None, limit: int | None = None, seed: int = 1234,
                 path: str | None = None) -> list:
        """The examples of ``split`` (a fixed, seeded subset of ``limit``), loaded once per task
        object: a check before the model loads and the run itself share them."""
        key = (split, limit, seed, path)
        if key in self._examples:
            ex, self.resolved_split = self._examples[key]
            return list(ex)
        ex = [e for e in self.load(split, path) if self.keep(e)]
        if limit is not None and limit < len(ex):
            idx = sorted(random.Random(seed).sample(range(len(ex)), limit))
            ex = [ex[i] for i in idx]
        self._examples[key] = (ex, self.resolved_split)
        return list(ex)

    def keep(self, example) -> bool:
        return True

    def prepare(self, examples: list, fewshot: int = 0, seed: int = 1234, path: str | None = None) -> None:
        """Called once before requests are built (e.g. to draw few-shot examples)."""

    # ------------------------------------------------------------------ per example
    def requests(self, example) -> list[Request]:
        raise NotImplementedError

    def chat_requests(self, example) -> list[Request]:
        """The requests when the task is asked in chat turns (the runner wraps each prompt in a user
        turn); a family whose spec has a ``chat_prompt`` asks with it."""
        return self.requests(example)

    def score(self, example, responses: list) -> dict[str, Any]:
        """Per-example record: metric values plus what was predicted (saved in the results)."""
        raise NotImplementedError

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """Metric values over examples (default: means of the per-example metrics)."""
        out = {}
        for m in self.metrics:
            vals = [r[m] for r in records if r.get(m) is not None]
            out[m] = sum(vals) / len(vals) if vals else float("nan")
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset, "split": self.split, "family": self.family,
                "prompt_version": self.prompt_version, "metrics": list(self.metrics),
                "primary": self.primary, "approximate": self.approximate, "group": self.group()}

    def group(self) -> str:
        """The survey's task family this benchmark belongs to (the report groups by it)."""
        from medslm.tasks.spec import GROUP_OF_FAMILY, group_of

        return group_of(self.spec) if self.spec is not None else GROUP_OF_FAMILY.get(self.family, self.family)


TASKS = Registry("task")  # filled from the benchmark specs (medslm.tasks.spec) by medslm.tasks


def get_task(name: str, **options: Any) -> Task:
    """A fresh task object. ``options`` are the family's (e.g. ``judge`` for rubric tasks); those a
    family does not take are dropped, so a caller may pass one set of options to every task."""
    factory = TASKS.get(name)
    return factory(name, **options)
