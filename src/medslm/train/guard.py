"""The contamination guard: training text must not appear in the data a model is evaluated on.

Before any training, every training example is compared (exact and near-duplicate, with
:func:`medslm.data.overlap.find_overlap`) with:

- every evaluation split of the same dataset: the split its evaluation task reads by default, the
  dataset's ``test`` and ``validation`` splits where present, and, when training on a carved
  ``fit@N``, the matching ``dev@N`` in place of the split it was carved from;
- ``medppl``'s documents of the same dataset when training reads PubMedQA abstracts or MedQuAD
  answers (with the same carve, so ``pubmedqa:fit@50`` is checked against ``medppl``'s PubMedQA
  abstracts on ``dev@50``, and ``medquad:train`` against its MedQuAD answers);
- any evaluation set the user names (``check: medqa:test,medppl``).

Overlap is an error listing the ids, unless ``allow_overlap`` is set; then the overlap is recorded
in the artifact's provenance, and every result and report built on it carries the warning.
"""

from __future__ import annotations

from medslm.errors import DataError, MedslmError

MEDPPL_SOURCES = {"pubmedqa", "medquad"}


class ContaminationError(MedslmError):
    exit_code = 3


def _task_examples(task_name: str, split: str | None) -> tuple[str, list]:
    from medslm.tasks import get_task

    t = get_task(task_name)
    ex = t.examples(split)
    return f"{task_name}:{t.resolved_split or split or t.split}", ex


def eval_sets(parts, check: str = "") -> dict[str, list]:
    """{name: examples} of everything the training parts must not overlap."""
    from medslm.data.splits import parse_carve
    from medslm.train.data import task_of

    of_dataset = task_of()

    sets: dict[str, list] = {}

    def add(task: str, split: str | None, optional: bool = False, source: str | None = None) -> None:
        try:
            name, ex = _task_examples(task, split)
        except DataError:
            if optional:
                return
            raise
        if source is not None:  # medppl mixes datasets: a part is checked against its own dataset's texts
            name, ex = f"{name}[{source}]", [e for e in ex if str(e.id).startswith(source + "-")]
        if name not in sets:
            sets[name] = ex

    for p in parts:
        carve = parse_carve(p.split)
        if p.dataset in of_dataset:
            task = of_dataset[p.dataset]
            from medslm.tasks import get_task

            t = get_task(task)
            own = {t.split, "test", "validation"}
            if carve is not None:
                src = carve.source or t.split
                add(task, p.split.replace("fit@", "dev@") if carve.part == "fit" else
                    p.split.replace("dev@", "fit@"))
                own.discard(src)
                if src == "auto":
                    t.load("auto")
                    own.discard(t.resolved_split)
            for s in sorted(own):
                add(task, s, optional=True)
        if p.dataset in MEDPPL_SOURCES:
            add("medppl", p.split.replace("fit@", "dev@") if carve is not None and carve.part == "fit"
                else None, optional=True, source=p.dataset)
    for item in [s.strip() for s in check.split(",") if s.strip()]:
        task, _, split = item.partition(":")
        from medslm.tasks import TASKS

        if task not in TASKS:
            raise TASKS.unknown(task)
        add(task, split or None)
    return sets


def check_contamination(parts, check: str = "", allow_overlap: bool = False,
                        threshold: float = 0.8, drop_overlap: bool = False) -> dict:
    """Compare the training parts with the evaluation sets. Returns what is recorded in provenance;
    raises :class:`ContaminationError` listing the ids on overlap unless ``allow_overlap``;
    ``drop_overlap`` removes the overlapping training examples instead (counted in the record)."""
    from medslm.data.overlap import find_overlap

    train = [e for p in parts for e in p.examples]
    sets = eval_sets(parts, check)
    found: dict[str, list] = {}
    for name, ex in sets.items():
        hits = find_overlap(train, ex, threshold=threshold)
        if hits:
            found[name] = hits
    dropped = 0
    if found and drop_overlap:
        bad = {m.a for hits in found.values() for m in hits}
        for p in parts:
            before = len(p.examples)
            p.examples[:] = [e for e in p.examples if e.id not in bad]
            dropped += before - len(p.examples)
            if not p.examples:
                raise ContaminationError(f"contamination guard: every example of {p.dataset}:{p.resolved} "
                                         "overlaps evaluation data")
    report = {"checked": {k: len(v) for k, v in sets.items()}, "threshold": threshold,
              "dropped": dropped,
              "overlap": {k: len(v) for k, v in found.items()},
              "overlap_ids": {k: sorted({f"{m.a}~{m.b}" for m in v})[:50] for k, v in found.items()},
              "allowed": bool(allow_overlap and found and not drop_overlap)}
    if found and not (allow_overlap or drop_overlap):
        lines = []
        for name, hits in found.items():
            pairs = sorted({(m.a, m.b, m.kind) for m in hits})
            shown = ", ".join(f"{a} ~ {b} ({k})" for a, b, k in pairs[:10])
            lines.append(f"  {name}: {len(pairs)} overlapping pair(s): {shown}"
                         + (" ..." if len(pairs) > 10 else ""))
        raise ContaminationError(
            "contamination guard: training data overlaps evaluation data\n" + "\n".join(lines) +
            "\nTrain on a carved part instead (e.g. pubmedqa:fit@50, then evaluate on dev@50); pass "
            "--drop-overlap to leave the listed training examples out, or --allow-overlap to train on "
            "them anyway (recorded in the artifact and printed with every result)")
    return report
