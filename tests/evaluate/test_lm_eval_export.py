"""medslm's tasks exported for lm-evaluation-harness: lm-eval, run on the exported folders with the
same model, reproduces medslm's numbers exactly (multiple choice), and runs the generation tasks."""

from __future__ import annotations

import json

import pytest
from helpers import fixtures, tiny

from medslm.cli import main


@pytest.fixture
def setup(tmp_path, monkeypatch):
    fixtures.pubmedqa(tmp_path / "d" / "pubmedqa", with_test=False)
    fixtures.medmcqa(tmp_path / "d" / "medmcqa")
    fixtures.meqsum(tmp_path / "d" / "meqsum")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "d"))
    return tiny.save_artifact("gemma3", tmp_path / "m", spm=True)


def test_lm_eval_reproduces_medslm_on_two_exported_tasks(tmp_path, setup, capsys):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    art = setup
    out = tmp_path / "lmeval"
    assert main(["eval", "--tasks", "pubmedqa,medmcqa,meqsum,medppl", "--export-lm-eval", str(out)]) == 0
    assert "medppl: skipped: a perplexity task" in capsys.readouterr().out
    assert (out / "meqsum" / "utils.py").is_file() and not (out / "medppl").exists()
    assert main(["eval", "--model", str(art.path), "--tasks", "pubmedqa,medmcqa", "--output", str(tmp_path / "r"),
                 "--no-decode-bench", "--bootstrap", "0"]) == 0
    mine = {json.loads(f.read_text())["task"]["name"]: json.loads(f.read_text()) for f in (tmp_path / "r").glob("*.json")}
    res = simple_evaluate(model="hf", model_args=f"pretrained={art.path},dtype=float32", device="cpu",
                          tasks=["medslm_pubmedqa", "medslm_medmcqa"], task_manager=TaskManager(include_path=str(out)),
                          log_samples=True, batch_size=1)
    for t in ("pubmedqa", "medmcqa"):
        theirs = res["results"][f"medslm_{t}"]
        assert theirs["acc,none"] == mine[t]["metrics"]["acc"]["value"]
        assert theirs["acc_norm,none"] == mine[t]["metrics"]["acc_norm"]["value"]
        # item by item: the same prediction and the same log-likelihoods
        samples = {s["doc"]["id"]: s for s in res["samples"][f"medslm_{t}"]}
        for ex in mine[t]["examples"]:
            lls = [x[0] for x in samples[ex["id"]]["filtered_resps"]]
            assert lls == pytest.approx(ex["loglik"], abs=1e-4)


def test_lm_eval_runs_an_exported_generation_task(tmp_path, setup):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    art = setup
    out = tmp_path / "lmeval"
    assert main(["eval", "--tasks", "meqsum", "--limit", "3", "--export-lm-eval", str(out)]) == 0
    assert main(["eval", "--model", str(art.path), "--tasks", "meqsum", "--limit", "3", "--output", str(tmp_path / "r"),
                 "--no-decode-bench", "--bootstrap", "0"]) == 0
    mine = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    res = simple_evaluate(model="hf", model_args=f"pretrained={art.path},dtype=float32", device="cpu",
                          tasks=["medslm_meqsum"], task_manager=TaskManager(include_path=str(out)),
                          log_samples=True, batch_size=1)
    samples = {s["doc"]["id"]: s["filtered_resps"][0].strip() for s in res["samples"]["medslm_meqsum"]}
    assert samples == {e["id"]: e["generation"] for e in mine["examples"]}  # the same greedy text
    assert res["results"]["medslm_meqsum"]["rougeL,none"] == pytest.approx(mine["metrics"]["rougeL"]["value"])
