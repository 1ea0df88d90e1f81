"""Paired comparisons against hand-computed values, and the report's words and baselines."""

from __future__ import annotations

import math

import pytest

from medslm.evaluate.paired import compare, describe, mcnemar_p, paired_bootstrap


def result(task, metric, examples, value):
    family = "perplexity" if task == "medppl" else "multiple_choice"
    return {"task": {"name": task, "primary": metric, "family": family}, "metrics": {metric: {"value": value}},
            "examples": examples, "model": {"label": "m"}, "efficiency": {}}


def acc_result(right: list[int], golds=None):
    ex = [{"id": f"q{i}", "acc": float(r), "gold": (golds or [0] * len(right))[i], "probs": [0.5, 0.3, 0.2]}
          for i, r in enumerate(right)]
    return result("pubmedqa", "acc", ex, sum(right) / len(right))


def test_exact_mcnemar_by_hand():
    # n = 10 discordant, 1 against 9: 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_p(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)
    assert mcnemar_p(0, 4) == pytest.approx(2 / 16)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0


def test_accuracy_difference_within_noise_and_significant():
    base = acc_result([1] * 5 + [0] * 5)
    other = acc_result([1] * 9 + [0])  # right on 4 more, wrong on none the base had
    c = compare(base, other)
    assert c["test"] == "exact McNemar" and (c["only_base"], c["only_other"]) == (0, 4)
    assert c["diff"] == pytest.approx(0.4) and c["p"] == pytest.approx(0.125) and not c["significant"]
    assert "+40.0 points" in c["words"] and "within noise" in c["words"] and "McNemar p = 0.125" in c["words"]
    big_base = acc_result([0] * 30 + [1] * 30)
    big = acc_result([1] * 60)  # 30 discordant, all one way: p = 2 / 2^30
    c = compare(big_base, big)
    assert c["p"] == pytest.approx(2 / 2 ** 30) and c["significant"]
    assert "significantly better" in c["words"]
    lo, hi = c["ci95"]
    assert 0 < lo <= 0.5 <= hi


def test_perplexity_difference_by_paired_bootstrap():
    from medslm.tasks import get_task

    agg = get_task("medppl").aggregate
    docs = [{"id": f"d{i}", "loglik": -100.0 - 7 * i, "words": 40 + i, "bytes": 200 + 5 * i} for i in range(12)]
    worse = [d | {"loglik": d["loglik"] - 10.0} for d in docs]  # every document 10 nats worse
    base = result("medppl", "word_perplexity", docs, agg(docs)["word_perplexity"])
    other = result("medppl", "word_perplexity", worse, agg(worse)["word_perplexity"])
    c = compare(base, other, agg)
    words = sum(d["words"] for d in docs)
    ll = sum(d["loglik"] for d in docs)
    want = math.exp(-(ll - 120) / words) - math.exp(-ll / words)
    assert c["diff"] == pytest.approx(want) and c["test"] == "paired bootstrap"
    lo, hi = c["ci95"]
    assert 0 < lo < want < hi and c["significant"] and "significantly worse" in c["words"]
    same = compare(base, base, agg)
    assert same["ci95"] == (0.0, 0.0) and not same["significant"] and "unchanged" in same["words"]


def test_results_on_other_items_are_not_compared():
    c = compare(acc_result([1, 0, 1]), acc_result([1, 0, 1, 1]))
    assert not c["comparable"] and "not on the same items" in c["words"]


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    pairs = [(0.0, float(i % 3 == 0)) for i in range(90)]
    ci = paired_bootstrap(pairs, lambda ps: sum(b - a for a, b in ps) / len(ps))
    assert ci == paired_bootstrap(pairs, lambda ps: sum(b - a for a, b in ps) / len(ps))
    assert ci[0] < 1 / 3 < ci[1]


def test_describe_says_lower_perplexity_is_better():
    c = {"metric": "word_perplexity", "diff": -2.0, "ci95": (-3.0, -1.0), "significant": True, "n": 20}
    assert "significantly better" in describe(c)


def test_report_lists_paired_tests_and_draws_chance_and_majority(tmp_path):
    import json

    from medslm.report.build import baselines, build_report

    res = tmp_path / "results"
    res.mkdir()
    golds = [0] * 6 + [1] * 3 + [2]
    for label, right in (("base", [1] * 5 + [0] * 5), ("int4", [1] * 4 + [0] * 6)):
        r = acc_result(right, golds)
        r["model"] = {"label": label, "chain": "base", "bytes": 100 if label == "base" else 30, "hash": label}
        r["efficiency"] = {"cpu": "x", "threads": 2}
        r["metrics"]["acc"]["ci95"] = [0.2, 0.8]
        (res / f"{label}__pubmedqa.json").write_text(json.dumps(r))
    assert baselines([acc_result([1] * 10, golds)], "pubmedqa") == {"majority": 0.6, "chance": pytest.approx(1 / 3)}
    rep = build_report(res, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "int4, pubmedqa: acc -10.0 points" in md and "within noise (McNemar p = 1" in md
    lb = json.loads((tmp_path / "leaderboard.json").read_text())
    assert lb["paired"][0]["only_base"] == 1 and lb["paired"][0]["only_other"] == 0
    page = open(rep["html"]).read()
    assert "majority class (60%)" in page and "chance (33%)" in page and "item by item" in page


def test_report_groups_tasks_by_the_surveys_task_families(tmp_path):
    import json

    from medslm.report.build import build_report

    res = tmp_path / "results"
    res.mkdir()
    fams = {"medppl": ("perplexity", "language modelling"), "bc5cdr": ("ner", "named-entity recognition"),
            "meqsum": ("open_generation", "summarization"), "pubmedqa": ("multiple_choice", "question answering"),
            "medmcqa": ("multiple_choice", None)}  # None: a result written before groups were recorded
    for t, (fam, group) in fams.items():
        r = acc_result([1, 0, 1])
        r["task"] |= {"name": t, "family": fam, **({"group": group} if group else {})}
        r["model"] = {"label": "base", "chain": "base", "bytes": 10, "hash": "h"}
        r["efficiency"] = {"cpu": "x", "threads": 2}
        (res / f"base__{t}.json").write_text(json.dumps(r))
    build_report(res, tmp_path, task_order=["medppl", "meqsum", "medmcqa", "bc5cdr", "pubmedqa"])
    lb = json.loads((tmp_path / "leaderboard.json").read_text())
    assert lb["tasks"] == ["medmcqa", "pubmedqa", "bc5cdr", "meqsum", "medppl"]  # families, then recipe order
    assert lb["groups"]["medmcqa"] == "question answering" and lb["groups"]["bc5cdr"] == "named-entity recognition"
    md = (tmp_path / "report.md").read_text()
    assert "| task family |  | question answering | question answering | named-entity recognition |" in md
    page = (tmp_path / "report.html").read_text()
    assert '<th colspan="2">question answering</th><th colspan="1">named-entity recognition</th>' in page
