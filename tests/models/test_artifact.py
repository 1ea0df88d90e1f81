import json
import os

import pytest
from helpers import tiny

from medslm.errors import ArtifactError
from medslm.models.artifact import ModelArtifact, content_hash, new_step


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_save_load_round_trip(tmp_path, arch):
    import torch

    m = tiny.model(arch)
    art = ModelArtifact.save(m, tiny.tokenizer(), tmp_path / "a", source=f"tiny:{arch}",
                             steps=[new_step("quantize", {"bits": 8})])
    meta = json.loads((tmp_path / "a" / "medslm.json").read_text())
    assert meta["schema_version"] == 1
    assert meta["source"] == f"tiny:{arch}"
    assert meta["steps"][0]["name"] == "quantize" and meta["steps"][0]["config"] == {"bits": 8}
    assert meta["parameters"] == sum(p.numel() for p in m.parameters())
    assert meta["bytes"] > 0 and meta["dtype"] == "float32"
    assert meta["content_hash"] == content_hash(tmp_path / "a") == art.meta.content_hash
    assert "torch" in meta["packages"] and "transformers" in meta["packages"]

    again = ModelArtifact.open(tmp_path / "a")
    model2, tok2 = again.load()
    ids = torch.tensor([tiny.tokenizer()("Question: scurvy?").input_ids])
    with torch.no_grad():
        assert torch.equal(m(ids).logits, model2(ids).logits)
    assert again.step_chain() == "base -> quantize"


def test_load_is_strict_about_missing_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny.save_artifact("llama", tmp_path / "a")
    f = tmp_path / "a" / "model.safetensors"
    sd = load_file(f)
    dropped = "model.layers.1.mlp.down_proj.weight"
    del sd[dropped]
    sd["model.extra.weight"] = sd["model.norm.weight"].clone()
    save_file(sd, f, metadata={"format": "pt"})
    with pytest.raises(ArtifactError, match="medslm.json records"):  # the recorded sizes catch it first
        ModelArtifact.open(tmp_path / "a").load()
    (tmp_path / "a" / "medslm.json").unlink()  # a plain HF directory: the strict load catches it
    with pytest.raises(ArtifactError) as e:
        ModelArtifact.open(tmp_path / "a").load()
    assert dropped in str(e.value) and "model.extra.weight" in str(e.value)


def test_verify_detects_changed_files(tmp_path):
    art = tiny.save_artifact("gpt2", tmp_path / "a")
    art.verify()
    cfg = tmp_path / "a" / "config.json"
    text = cfg.read_text()
    cfg.write_text(text.replace("{", "[", 1))  # same size, other bytes: only the hash sees it
    with pytest.raises(ArtifactError, match="content hash"):
        ModelArtifact.open(tmp_path / "a").verify()
    cfg.write_text(text + " ")  # another size: the cheap check on every load sees it
    with pytest.raises(ArtifactError, match="config.json: 8.* bytes, but medslm.json records"):
        ModelArtifact.open(tmp_path / "a").check_files()


def test_save_refuses_to_overwrite_and_is_atomic(tmp_path, monkeypatch):
    tiny.save_artifact("gpt2", tmp_path / "a")
    before = content_hash(tmp_path / "a")
    with pytest.raises(ArtifactError, match="already exists"):
        tiny.save_artifact("gpt2", tmp_path / "a", seed=1)
    # a crash midway leaves neither a half artifact nor a temp dir, and the old one intact
    m = tiny.model("gpt2", seed=2)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(tiny.tokenizer()), "save_pretrained", boom)
    with pytest.raises(RuntimeError):
        ModelArtifact.save(m, tiny.tokenizer(), tmp_path / "a", source="x", overwrite=True)
    with pytest.raises(RuntimeError):
        ModelArtifact.save(m, tiny.tokenizer(), tmp_path / "b", source="x")
    assert content_hash(tmp_path / "a") == before
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_damaged_metadata_is_a_clear_error(tmp_path):
    tiny.save_artifact("gpt2", tmp_path / "a")
    (tmp_path / "a" / "medslm.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="medslm.json"):
        ModelArtifact.open(tmp_path / "a")
