"""The held-out check: compression steps that may read the records a recipe evaluates."""

from helpers import fixtures, tiny
import pytest

from medslm.recipe_load import load_recipe

RECIPE = """\
version: 1
name: held-out
model: {model}
eval:
  tasks: [pubmedqa]
{split}variants:
  - name: rtn
    steps:
      - {{method: quantize, bits: 4}}
  - name: gptq
    steps:
      - {{method: quantize, bits: 4, algorithm: gptq, calibration: "{calibration}"}}
  - name: trim
    steps:
      - {{method: trim, corpus: "{corpus}"}}
"""


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    fixtures.pubmedqa(tmp_path / "mirror" / "pubmedqa", with_test=False)  # evaluation reads its train records
    tiny.save_artifact("llama", tmp_path / "model")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "mirror"))
    return tmp_path


def check(tmp_path, split="", calibration="pubmedqa", corpus="pubmedqa"):
    from medslm.held_out import overlaps

    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(split=split, calibration=calibration, corpus=corpus, model=tmp_path / "model"))
    return {(o["variant"], o["field"]): o["evaluated"] for o in overlaps(load_recipe(path))}


def test_uncarved_calibration_and_corpus_read_what_the_evaluation_scores(mirror):
    # 6 train records, all evaluated; RTN reads no text, so it is not listed
    assert check(mirror) == {("gptq", "calibration"): {"pubmedqa": 6}, ("trim", "corpus"): {"pubmedqa": 6}}
    # a carve on the compression side only: its 4 records are still among the 6 evaluated
    assert check(mirror, calibration="pubmedqa:fit@2") == {("gptq", "calibration"): {"pubmedqa": 4},
                                                         ("trim", "corpus"): {"pubmedqa": 6}}


def test_a_carve_on_both_sides_is_clean(mirror):
    split = "  split: {pubmedqa: dev@2}\n"
    assert check(mirror, split, "pubmedqa:fit@2", "pubmedqa:fit@2") == {}
    # trim's bare NAME reads every record, the two held out too
    assert check(mirror, split, "pubmedqa:fit@2", "pubmedqa") == {("trim", "corpus"): {"pubmedqa": 2}}


def test_run_check_prints_the_overlap(mirror, capsys):
    from medslm.cli import main

    path = mirror / "r.yaml"
    path.write_text(RECIPE.format(split="", calibration="pubmedqa", corpus="pubmedqa:fit@2", model=mirror / "model"))
    assert main(["run", str(path), "--check", "--output", str(mirror / "out")]) == 0
    out = capsys.readouterr().out
    assert "warning: gptq step 1 (quantize): calibration 'pubmedqa' may read records the evaluation scores (pubmedqa 6)" in out
    assert "warning: trim step 1 (trim): corpus 'pubmedqa:fit@2' may read records" in out and "rtn step" not in out


@pytest.mark.parametrize("name", ["quickstart", "medical-assistant"])
def test_the_shipped_headline_recipes_compress_on_what_they_do_not_score(data_dir, name):
    """On the mirror: the quickstart and the medical assistant evaluate carved dev parts and test
    documents, and calibrate and trim on the rest only."""
    from pathlib import Path

    import medslm
    from medslm.held_out import overlaps

    recipe = load_recipe(Path(medslm.__file__).parent / "recipes" / f"{name}.yaml")
    assert any(s.get("method") == "trim" for v in recipe.variants for s in v.steps)
    assert overlaps(recipe) == []
