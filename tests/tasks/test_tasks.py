"""Tasks: the registry of benchmark specs, lm-eval's prompts, seeded subsets, few-shot prompts,
chain-of-thought parsing, and the metrics' reference values."""

import subprocess
import sys

import pytest

from medslm.backends.dummy import DummyBackend
from medslm.evaluate.runner import evaluate
from medslm.tasks import TASKS, get_task
from medslm.tasks.classification import auprc, auroc
from medslm.tasks.multiple_choice import macro_f1


def test_task_registry_lists_everything():
    names = TASKS.names()
    for n in ["pubmedqa", "medmcqa", "medqa_4options", "mmlu_anatomy", "mmlu_professional_medicine",
              "pubmedqa_cot", "medquad", "medtext", "amega", "drugcomb_synergy", "mimic3_mortality", "medppl"]:
        assert n in names
    p = subprocess.run([sys.executable, "-m", "medslm", "eval", "--tasks", "ls"], capture_output=True, text=True)
    assert p.returncode == 0 and "pubmedqa" in p.stdout and "prompt" in p.stdout


def test_prompts_match_lm_eval():
    from medslm.data.examples import MultipleChoice

    e = MultipleChoice(id="x", question="Q?", options=["a", "b", "c", "d"], answer=1, context="C1\nC2")
    assert get_task("pubmedqa").text(e) == "Abstract: C1\nC2\nQuestion: Q?\nAnswer:"
    assert get_task("medmcqa").text(e) == "Question: Q?\nChoices:\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert get_task("medqa_4options").text(e) == "Question: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    t = get_task("mmlu_college_medicine")
    e.meta["subject"] = "college_medicine"
    assert t.prompt(e) == ("The following are multiple choice questions (with answers) about college "
                           "medicine.\n\nQ?\nA. a\nB. b\nC. c\nD. d\nAnswer:")


def test_limit_is_a_fixed_seeded_subset(mirror):
    t = get_task("medmcqa")
    a = [e.id for e in t.examples(limit=3, seed=7)]
    assert a == [e.id for e in t.examples(limit=3, seed=7)] and len(a) == 3
    subsets = {tuple(e.id for e in t.examples(limit=3, seed=s)) for s in range(10)}
    assert len(subsets) > 1  # the seed matters
    order = [e.id for e in t.examples()]
    assert all(list(x) == sorted(x, key=order.index) for x in subsets)  # dataset order kept


def test_fewshot_prompt(mirror):
    t = get_task("medmcqa")
    ex = t.examples()
    t.prepare(ex, fewshot=1, seed=1)
    p = t.prompt(ex[0])
    assert p.startswith("Question: Train?\nChoices:\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\nQuestion: Question 0?")


def test_cot_parsing(mirror):
    t = get_task("medmcqa_cot")
    e = t.examples()[0]
    assert t.parse(e, "The nerve ... so the answer is B.\nAnswer: C") == 2
    assert t.parse(e, "I think (D) is right") == 3
    assert t.parse(e, "no idea") is None
    res = evaluate(DummyBackend(), [t], bootstrap=0, measure_decode=False, progress=False,
                   cache_path=None)[0]
    assert all(r["pred"] is not None for r in res["examples"])


def test_auroc_auprc_reference_values():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert auroc(y, s) == pytest.approx(0.75)
    assert auprc(y, s) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert macro_f1([0, 1, 2, 0], [0, 1, 1, 0], 3) == pytest.approx((1 + 2 / 3 + 0) / 3)
