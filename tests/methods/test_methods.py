"""Compression methods on tiny random models of every architecture (contract tests)."""

from helpers import fixtures
import pytest
from helpers import tiny
import torch

from medslm.errors import ConfigError, MedslmError
from medslm.methods import compress, parse_config
from medslm.models.artifact import ModelArtifact

TEXT = "The patient presented with chest pain and elevated troponin levels."


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text(tiny.CORPUS[2] + "\n\n" + tiny.CORPUS[4])  # a part of what the tokenizer knows
    return str(f)


def logits(model, tok, text=TEXT):
    with torch.no_grad():
        return model(torch.tensor([tok(text).input_ids])).logits[0]


@pytest.mark.parametrize("arch", tiny.ARCHS)
@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_round_trip(tmp_path, arch, bits):
    base = tiny.save_artifact(arch, tmp_path / "base")
    q = compress(base, {"method": "quantize", "bits": bits, "group_size": 16}, tmp_path / "q")
    assert q.meta.extra["quantization"]["bits"] == bits
    assert q.meta.parameters == base.meta.parameters
    assert q.meta.bytes < base.meta.bytes  # really smaller on disk
    m0, tok = base.load()
    m1, _ = ModelArtifact.open(q.path).load()
    err = (logits(m0, tok) - logits(m1, tok)).abs().max().item()
    assert 0 < err < (0.02 if bits == 8 else 0.3)  # quantized, and close
    assert q.step_chain() == "base -> quantize" and q.meta.steps[-1]["input_hash"] == base.hash
    # the input artifact is untouched
    assert ModelArtifact.open(base.path).hash == base.hash
    from medslm.models.artifact import content_hash

    assert content_hash(base.path) == base.meta.content_hash


def test_quantize_packs_int4_exactly():
    from medslm.methods.quantize import quantize_linear

    lin = torch.nn.Linear(32, 4)
    q = quantize_linear(lin, 4, 16)
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (4, 16)
    w = q.dequantize()
    scale = q.scales.float().repeat_interleave(16, 1)
    steps = (w / scale).round()
    assert steps.min() >= -8 and steps.max() <= 7
    assert torch.allclose(w, steps * scale)
    err, half = (w - lin.weight).abs(), scale.abs() / 2 + 1e-6
    # the signed extreme maps to -8 exactly; a value of the other sign beyond 7 steps is clamped to
    # code 7 (Q4_0's rule), so only there may the error reach one step
    assert ((err <= half) | (steps == 7)).all() and (err <= 2 * half).all()
    assert (steps == -8).any(dim=1).all()  # every row's extreme took code -8


@pytest.mark.parametrize("arch", tiny.ARCHS)
@pytest.mark.parametrize("algo,pattern", [("magnitude", None), ("wanda", None), ("wanda", "2:4"),
                                          ("sparsegpt", None), ("sparsegpt", "2:4")])
def test_unstructured_sparsity_reached(tmp_path, arch, algo, pattern, corpus):
    from medslm.models.anatomy import decoder_layers
    from medslm.models.anatomy import is_linear, linear_weight

    base = tiny.save_artifact(arch, tmp_path / "base")
    cfg = {"method": "prune", "algorithm": algo, "sparsity": 0.5, "calibration": corpus, "samples": 4,
           "seq_len": 32}
    if pattern:
        cfg["pattern"] = pattern
    p = compress(base, cfg, tmp_path / "p")
    assert p.meta.steps[-1]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    m, tok = ModelArtifact.open(p.path).load()
    for mod in decoder_layers(m).modules():
        if is_linear(mod):
            w = linear_weight(mod)
            assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
            if pattern:  # every group of 4 consecutive inputs keeps exactly 2
                g = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
                assert bool((g == 2).all())
    assert torch.isfinite(logits(m, tok)).all()


def test_wanda_uses_activations(tmp_path, corpus):
    base = tiny.save_artifact("llama", tmp_path / "base")
    a = compress(base, {"method": "prune", "algorithm": "magnitude"}, tmp_path / "mag")
    b = compress(base, {"method": "prune", "algorithm": "wanda", "calibration": corpus, "samples": 4,
                        "seq_len": 32}, tmp_path / "wanda")
    ma, _ = a.load()
    mb, _ = b.load()
    wa = ma.model.layers[0].mlp.down_proj.weight
    wb = mb.model.layers[0].mlp.down_proj.weight
    assert not torch.equal(wa == 0, wb == 0)  # different masks: the calibration mattered


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_depth_pruning_removes_blocks(tmp_path, arch, corpus):
    base = tiny.save_artifact(arch, tmp_path / "base")
    p = compress(base, {"method": "prune", "algorithm": "depth", "sparsity": 0.5, "calibration": corpus,
                        "samples": 4, "seq_len": 32}, tmp_path / "p")
    m, tok = ModelArtifact.open(p.path).load()
    assert m.config.num_hidden_layers == 1 and len(p.meta.steps[-1]["removed_blocks"]) == 1
    assert p.meta.parameters < base.meta.parameters
    assert torch.isfinite(logits(m, tok)).all()


@pytest.mark.parametrize("arch", ["gemma3", "llama", "mistral"])
def test_width_pruning_shrinks_mlp(tmp_path, arch, corpus):
    base = tiny.save_artifact(arch, tmp_path / "base")
    p = compress(base, {"method": "prune", "algorithm": "width", "sparsity": 0.5, "calibration": corpus,
                        "samples": 4, "seq_len": 32}, tmp_path / "p")
    m, tok = ModelArtifact.open(p.path).load()
    assert m.config.intermediate_size == 32
    assert m.model.layers[0].mlp.down_proj.weight.shape == (32, 32)
    assert torch.isfinite(logits(m, tok)).all()


@pytest.mark.parametrize("arch", ["gemma3", "llama", "mistral"])
def test_head_pruning_removes_the_weakest_head_and_equals_zeroing_it(tmp_path, arch, corpus):
    """Removing a head (its q rows and o_proj columns) must give exactly the original model with that
    head's o_proj columns zeroed; the head whose output is scaled down is the one removed."""
    m0 = tiny.model(arch)
    d = m0.config.head_dim
    weak = 0 if arch == "gemma3" else 1
    for layer in m0.model.layers:
        layer.self_attn.o_proj.weight.data[:, weak * d:(weak + 1) * d] *= 0.01
    base = ModelArtifact.save(m0, tiny.tokenizer(), tmp_path / "base", source=f"tiny-random:{arch}")
    p = compress(base, {"method": "prune", "algorithm": "heads", "sparsity": 0.5, "calibration": corpus,
                        "samples": 4, "seq_len": 32}, tmp_path / "p")
    assert p.meta.steps[-1]["removed_heads"] == [[weak]] * 2
    assert p.meta.steps[-1]["num_attention_heads"] == [2, 1]
    m, tok = ModelArtifact.open(p.path).load()
    assert m.config.num_attention_heads == 1 and m.config.head_dim == d
    attn = m.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (d, 32) and attn.o_proj.weight.shape == (32, d)
    assert p.meta.parameters < base.meta.parameters
    for layer in m0.model.layers:
        layer.self_attn.o_proj.weight.data[:, weak * d:(weak + 1) * d] = 0
    assert torch.allclose(logits(m, tok), logits(m0, tok), atol=1e-4)


def test_head_pruning_refuses_fused_attention_and_too_small_sparsity(tmp_path, corpus):
    base = tiny.save_artifact("gpt2", tmp_path / "base")
    with pytest.raises(MedslmError, match="q/k/v/o"):
        compress(base, {"method": "prune", "algorithm": "heads", "calibration": corpus}, tmp_path / "p")
    base = tiny.save_artifact("llama", tmp_path / "b2")
    with pytest.raises(MedslmError, match="removes 0 of the 2 query heads"):
        compress(base, {"method": "prune", "algorithm": "heads", "sparsity": 0.25, "calibration": corpus,
                        "samples": 2, "seq_len": 16}, tmp_path / "p2")
    # 4 heads of 8 dims in a hidden size of 32: 3 heads would not divide it (as for Gemma 3 270M)
    from transformers import AutoModelForCausalLM

    cfg = tiny.config("llama")
    cfg.num_attention_heads, cfg.head_dim = 4, 8
    m = AutoModelForCausalLM.from_config(cfg)
    base = ModelArtifact.save(m, tiny.tokenizer(), tmp_path / "b4", source="tiny-random:llama4")
    with pytest.raises(MedslmError, match=r"leaves 3 attention heads, which does not divide hidden_size 32.*"
                                          r"choose sparsity 0.5 \(2 heads\) or 0.75 \(1 head\)"):
        compress(base, {"method": "prune", "algorithm": "heads", "sparsity": 0.25, "calibration": corpus,
                        "samples": 2, "seq_len": 16}, tmp_path / "p4")
    ok = compress(base, {"method": "prune", "algorithm": "heads", "sparsity": 0.5, "calibration": corpus,
                         "samples": 2, "seq_len": 16}, tmp_path / "p5")
    assert ok.meta.steps[-1]["num_attention_heads"] == [4, 2]


def test_width_pruning_refuses_other_mlps(tmp_path, corpus):
    base = tiny.save_artifact("gpt2", tmp_path / "base")
    with pytest.raises(MedslmError, match="gate/up/down"):
        compress(base, {"method": "prune", "algorithm": "width", "calibration": corpus}, tmp_path / "p")


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_trim_keeps_in_domain_tokens_and_logits(tmp_path, arch, corpus):
    base = tiny.save_artifact(arch, tmp_path / "base")
    t = compress(base, {"method": "trim", "corpus": corpus}, tmp_path / "t")
    st = t.meta.steps[-1]
    assert st["vocab_after"] < st["vocab_before"]
    m0, t0 = base.load()
    m1, t1 = ModelArtifact.open(t.path).load()
    ids0, ids1 = t0(TEXT).input_ids, t1(TEXT).input_ids
    assert t0.convert_ids_to_tokens(ids0) == t1.convert_ids_to_tokens(ids1)  # identical tokenization
    kept = [t0.convert_tokens_to_ids(x) for x in t1.convert_ids_to_tokens(list(range(len(t1))))]
    # the kept tokens' logits are exactly the original ones: only the softmax runs over fewer tokens
    assert torch.allclose(logits(m1, t1), logits(m0, t0)[:, kept], atol=1e-5)
    oov = "Zebra quixotic ü 漢"
    assert t1.decode(t1(oov, add_special_tokens=False).input_ids) == oov  # OOV text still encodes


def test_trim_then_quantize_chain(tmp_path, corpus):
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    t = compress(base, {"method": "trim", "corpus": corpus}, tmp_path / "t")
    q = compress(t, {"method": "quantize", "bits": 4, "group_size": 16}, tmp_path / "tq")
    assert q.step_chain() == "base -> trim -> quantize"
    assert q.meta.bytes < t.meta.bytes < base.meta.bytes
    with pytest.raises(MedslmError, match="quantized"):
        compress(q, {"method": "prune", "algorithm": "magnitude"}, tmp_path / "x")


@pytest.mark.parametrize("cfg,msg", [
    ({"method": "quantize", "bits": 3}, "bits=3"),
    ({"method": "quantize", "group_size": 100}, "group_size=100: must be a power of two"),
    ({"method": "prune", "sparsity": 1.2}, "sparsity=1.2: must be between 0 and 1"),
    ({"method": "prune", "pattern": "2-4"}, "pattern='2-4'"),
    ({"method": "prune", "algorithm": "depth", "pattern": "2:4"}, "applies to algorithm='magnitude', 'sparsegpt' or 'wanda', not 'depth'"),
    ({"method": "prune", "sparsityy": 0.5}, "sparsityy: unknown key"),
    ({"method": "trim", "min_count": 0}, "min_count=0"),
    ({"method": "quantize", "act_order": True}, "act_order=True applies to algorithm='gptq', not 'rtn'"),
    ({"method": "quantize", "sequential": True}, "sequential=True applies to algorithm='gptq'"),
    ({"method": "prune", "algorithm": "heads", "pattern": "2:4"}, "not 'heads'"),
])
def test_configs_reject_bad_values(cfg, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config(cfg)


def test_unknown_method_suggests():
    with pytest.raises(MedslmError, match="Did you mean prune"):
        parse_config({"method": "prun"})


def test_config_round_trip():
    c = parse_config({"method": "prune", "algorithm": "wanda", "pattern": "2:4"})
    assert parse_config(c.to_dict()) == c


def test_medical_calibration_from_datasets(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    from medslm.methods.calibration import calibration_texts

    texts = calibration_texts("pubmedqa", 10, 1)
    assert len(texts) == 4 and all(t.startswith("Background") for t in texts)  # train split only


def test_calibration_on_a_carve_leaves_out_what_its_dev_part_evaluates(tmp_path, monkeypatch):
    """A mirror without PubMedQA's test split evaluates on its train records; pubmedqa:fit@2
    calibrates on every record but the two that --split pubmedqa=dev@2 scores."""
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa", with_test=False)
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    from medslm.methods.calibration import calibration_texts
    from medslm.tasks import get_task

    every = calibration_texts("pubmedqa", 10, 1)
    fit = calibration_texts("pubmedqa:fit@2", 10, 1)
    dev = {e.context for e in get_task("pubmedqa").examples("dev@2")}
    assert len(every) == 6 and len(fit) == 4 and len(dev) == 2
    assert not dev & set(fit) and set(fit) | dev == set(every)
    for bad, hint in (("pubmedqa:dev@2", "pubmedqa:fit@2"), ("pubmedqa:test", "evaluation split")):
        with pytest.raises(MedslmError, match=hint):
            calibration_texts(bad, 10, 1)


def test_cli_quantize_and_info(tmp_path):
    import subprocess
    import sys

    tiny.save_artifact("llama", tmp_path / "base")
    p = subprocess.run([sys.executable, "-m", "medslm", "quantize", "--model", str(tmp_path / "base"),
                        "--bits", "4", "--group-size", "16", "--out", str(tmp_path / "q")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    i = subprocess.run([sys.executable, "-m", "medslm", "models", "info", str(tmp_path / "q")],
                       capture_output=True, text=True)
    assert "base -> quantize" in i.stdout and "bits=4" in i.stdout


# ---------------------------------------------------------------------------------- distillation
@pytest.fixture
def pruned_pair(tmp_path, corpus):
    """A teacher and a depth-pruned student that starts far from it (another random init)."""
    teacher = tiny.save_artifact("llama", tmp_path / "teacher", seed=0)
    other = tiny.save_artifact("llama", tmp_path / "other", seed=1)
    student = compress(other, {"method": "prune", "algorithm": "depth", "sparsity": 0.5,
                               "calibration": corpus, "samples": 4, "seq_len": 32}, tmp_path / "student")
    return teacher, student


def distill_cfg(teacher, corpus, **kw):
    return {"method": "distill", "teacher": str(teacher.path), "corpus": corpus, "steps": 30,
            "batch_size": 2, "seq_len": 32, "lr": 3e-3, "checkpoint_every": 10, **kw}


@pytest.mark.parametrize("mode", ["logit", "sequence"])
def test_distillation_lowers_kl_to_teacher(tmp_path, pruned_pair, corpus, mode):
    teacher, student = pruned_pair
    d = compress(student, distill_cfg(teacher, corpus, mode=mode, alpha=1.0), tmp_path / f"d-{mode}")
    st = d.meta.steps[-1]
    assert st["held_out_after"] < st["held_out_before"]
    assert st["held_out_metric"] == ("kl_to_teacher" if mode == "logit" else "ce_on_teacher_sequences")
    assert d.step_chain() == "base -> prune -> distill" and st["teacher_hash"] == teacher.hash


def test_distillation_resumes_from_checkpoint(tmp_path, pruned_pair, corpus, monkeypatch):
    teacher, student = pruned_pair
    cfg = distill_cfg(teacher, corpus, steps=20)
    ref = compress(student, cfg, tmp_path / "ref")
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def crash_after_15(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 15:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_after_15)
    with pytest.raises(KeyboardInterrupt):
        compress(student, cfg, tmp_path / "resumed")
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    out = compress(student, cfg, tmp_path / "resumed")
    assert out.meta.steps[-1]["resumed_at"] == 10  # the last checkpoint, not the start
    m1, tok = ModelArtifact.open(ref.path).load()
    m2, _ = ModelArtifact.open(out.path).load()
    assert torch.allclose(logits(m1, tok), logits(m2, tok), atol=1e-5)  # same result as uninterrupted


def test_distill_refuses_different_vocabularies(tmp_path, corpus):
    base = tiny.save_artifact("llama", tmp_path / "teacher")
    trimmed = compress(base, {"method": "trim", "corpus": corpus}, tmp_path / "t")
    with pytest.raises(MedslmError, match="vocabularies differ"):
        compress(trimmed, distill_cfg(base, corpus), tmp_path / "d")


@pytest.mark.parametrize("arch", ["gemma3", "gpt2"])
@pytest.mark.parametrize("emb", ["int8", "int4"])
def test_quantized_embeddings_with_tied_head(tmp_path, arch, emb):
    base = tiny.save_artifact(arch, tmp_path / "base")
    q = compress(base, {"method": "quantize", "bits": 4, "group_size": 16, "embeddings": emb},
                 tmp_path / "q")
    plain = compress(base, {"method": "quantize", "bits": 4, "group_size": 16, "embeddings": "keep"},
                     tmp_path / "plain")
    assert q.meta.bytes < plain.meta.bytes and q.meta.parameters == base.meta.parameters
    assert q.meta.extra["quantization"]["embedding_group_size"] == 32  # GGUF blocks
    m0, tok = base.load()
    m1, _ = ModelArtifact.open(q.path).load()
    m2, _ = ModelArtifact.open(plain.path).load()
    from medslm.models.quantized import QuantEmbedding, QuantTiedHead

    e = m1.get_input_embeddings()
    assert isinstance(e, QuantEmbedding) and isinstance(m1.get_output_embeddings(), QuantTiedHead)
    assert e.bits == int(emb[3:]) and e.scales.shape == (e.num_embeddings, e.embedding_dim // 32)
    w = m0.get_input_embeddings().weight.detach()
    rel = ((e.rows(slice(None)) - w).norm() / w.norm()).item()
    assert rel < (0.01 if emb == "int8" else 0.15)  # per-block absmax rounding
    e_q = (logits(m0, tok) - logits(m1, tok)).abs().max().item()
    e_plain = (logits(m0, tok) - logits(m2, tok)).abs().max().item()
    assert e_q < (2 if emb == "int8" else 4) * e_plain + 0.05  # the embedding adds little error


def test_default_embeddings_follow_the_head(tmp_path):
    """auto: a tied embedding (Gemma) is int8, an untied one (Llama) stays in float."""
    tied = compress(tiny.save_artifact("gemma3", tmp_path / "g"), {"method": "quantize", "group_size": 16},
                    tmp_path / "gq")
    untied = compress(tiny.save_artifact("llama", tmp_path / "l"), {"method": "quantize", "group_size": 16},
                      tmp_path / "lq")
    assert tied.meta.extra["quantization"]["embeddings"] == "int8"
    assert untied.meta.extra["quantization"]["embeddings"] == "keep"


def test_artifacts_with_per_row_int8_embeddings_still_load(tmp_path):
    """Artifacts written before embedding groups: int8 rows, one scale per row."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    q = compress(tiny.save_artifact("gemma3", tmp_path / "g"), {"method": "quantize", "group_size": 16}, tmp_path / "q")
    m, _ = q.load()
    w = m.get_input_embeddings().rows(slice(None))
    s = (w.abs().amax(-1) / 127).half()
    codes = torch.round(w / s.float()[:, None]).clamp(-127, 127).to(torch.int8)
    f = q.path / "model.safetensors"
    state = load_file(str(f))
    key = next(k for k in state if k.endswith("embed_tokens.scales"))
    state[key], state[key.replace("scales", "qweight")] = s, codes
    save_file(state, str(f), metadata={"format": "pt"})
    meta = json.loads((q.path / "medslm.json").read_text())
    del meta["extra"]["quantization"]["embedding_group_size"]
    meta["files"], meta["content_hash"] = {}, ""  # edited on purpose: no size or hash check
    (q.path / "medslm.json").write_text(json.dumps(meta))
    old, _ = ModelArtifact.open(q.path).load()
    e = old.get_input_embeddings()
    assert e.group is None and torch.equal(e.rows(slice(None)), codes.float() * s.float()[:, None])


def test_int8_embeddings_of_an_untied_model_quantize_the_input_table_alone(tmp_path):
    """An untied model's input table is quantized alone: the head stays its own float layer (not
    read from the table), the record says untied, and the reloaded table equals the written one."""
    from medslm.models.quantized import QuantEmbedding, QuantTiedHead

    base = tiny.save_artifact("llama", tmp_path / "base")  # untied head
    q = compress(base, {"method": "quantize", "embeddings": "int8", "group_size": 16}, tmp_path / "q")
    rec = q.meta.extra["quantization"]
    assert rec["embeddings"] == "int8" and rec["embedding_tied"] is False and "lm_head" not in rec["modules"]
    model, _ = q.load()
    dense, _ = base.load()
    assert isinstance(model.get_input_embeddings(), QuantEmbedding)
    head = model.get_output_embeddings()
    assert not isinstance(head, QuantTiedHead) and torch.equal(head.weight, dense.get_output_embeddings().weight)
    table = model.get_input_embeddings().rows(slice(None))
    w = dense.get_input_embeddings().weight
    assert not torch.equal(table, w) and float((table - w).abs().max()) <= float(w.abs().max()) / 127


def test_trim_keeps_the_evaluation_prompts(tmp_path, monkeypatch):
    """Prompt templates ("Choices:", "Answer:") are tokenized exactly as before trimming."""
    root = tmp_path / "mirror"
    fixtures.medmcqa(root / "medmcqa")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    from medslm.tasks import get_task

    base = tiny.save_artifact("gemma3", tmp_path / "base")
    t = compress(base, {"method": "trim", "corpus": "medmcqa"}, tmp_path / "t")
    assert t.meta.steps[-1]["config"]["config_version"] == 2
    _, t0 = base.load()
    _, t1 = ModelArtifact.open(t.path).load()
    task = get_task("medmcqa")
    for e in task.examples():
        for r in task.requests(e):
            for text in (r.context, r.context + r.continuation):
                assert t0.convert_ids_to_tokens(t0(text).input_ids) == t1.convert_ids_to_tokens(t1(text).input_ids)


def test_trim_on_a_carve_reads_no_held_out_record(tmp_path, monkeypatch):
    """corpus pubmedqa:fit@2 reads every record but the two --split pubmedqa=dev@2 scores (their
    abstracts and the prompts built on them); the dev part and a test split are refused, with the fix."""
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa", with_test=False)
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    from medslm.methods.trim import corpus_texts
    from medslm.tasks import get_task

    every, fit = "\n".join(corpus_texts("pubmedqa")), "\n".join(corpus_texts("pubmedqa:fit@2"))
    task = get_task("pubmedqa")
    dev, kept = task.examples("dev@2"), task.examples("fit@2")
    assert all(e.context in every for e in dev + kept)
    assert all(e.context in fit for e in kept) and not any(e.context in fit for e in dev)
    for bad, hint in (("pubmedqa:dev@2", "use pubmedqa:fit@2"), ("pubmedqa:test", "is an evaluation split")):
        with pytest.raises(MedslmError, match=rf"corpus='{bad}': .*{hint}"):
            corpus_texts(bad)


def test_sparsegpt_update_compensates_the_pruned_weights():
    """On the calibration inputs, SparseGPT's weight update brings the pruned layer closer to the
    dense one than the same mask without the update, and far closer than magnitude pruning."""
    from medslm.methods.prune import mask_from_scores
    from medslm.methods.sparsegpt import sparsegpt_

    for seed in range(3):
        torch.manual_seed(seed)
        z = torch.randn(512, 64)
        x = z * torch.rand(64) * 3 + 0.3 * z[:, :1]  # features of unequal scale, one shared direction
        w = torch.randn(32, 64)
        dense = x @ w.t()
        sg = w.clone()
        sparsegpt_(sg, x.t() @ x, 0.5, None)
        assert (sg == 0).float().mean().item() == pytest.approx(0.5, abs=1e-6)

        def err(m):
            return ((x @ m.t() - dense) ** 2).mean().item()

        assert err(sg) < 0.95 * err(w * (sg != 0))
        assert err(sg) < 0.6 * err(w * mask_from_scores(w.abs(), 0.5, None))
    sg24 = w.clone()
    sparsegpt_(sg24, x.t() @ x, 0.5, "2:4")
    assert ((sg24.reshape(32, -1, 4) != 0).sum(-1) == 2).all()


@pytest.mark.parametrize("symmetric,act_order", [(True, False), (False, False), (True, True), (False, True)])
def test_gptq_beats_rtn_on_calibration_inputs(symmetric, act_order):
    """GPTQ's integers (same format as RTN: int4 + fp16 group scales, + zero points when asymmetric)
    reproduce the layer's output on the calibration inputs more closely than round-to-nearest."""
    from medslm.methods.gptq import quantize_linear as gptq_linear
    from medslm.methods.quantize import quantize_linear

    for seed in range(3):
        torch.manual_seed(seed)
        z = torch.randn(512, 64)
        x = z @ torch.randn(64, 64) / 8 + 0.3 * z  # correlated features, as activations are
        x[:, :8] *= 4  # a few strong inputs, which act-order visits first
        lin = torch.nn.Linear(64, 32, bias=False)
        dense = lin(x)
        rtn = quantize_linear(lin, 4, 16, symmetric=symmetric)
        gq = gptq_linear(lin, 4, 16, hessian=x.t() @ x, symmetric=symmetric, act_order=act_order)
        assert gq.qweight.dtype == torch.uint8 and gq.scales.dtype == torch.float16
        assert hasattr(gq, "zeros") != symmetric
        with torch.no_grad():
            e_rtn = ((rtn(x) - dense) ** 2).mean().item()
            e_gq = ((gq(x) - dense) ** 2).mean().item()
        assert e_gq < 0.7 * e_rtn, (e_gq, e_rtn)


def test_asymmetric_int4_uses_the_whole_range():
    """Zero points: codes 0..15, w = (q - zero) * scale within a step, and a lopsided weight
    distribution is represented more finely than with a symmetric grid."""
    from medslm.methods.quantize import quantize_linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 8)
    lin.weight.data = torch.rand(8, 64) * 0.5 - 0.05  # mostly positive
    a = quantize_linear(lin, 4, 32, symmetric=False)
    s = quantize_linear(lin, 4, 32)
    codes = torch.stack([a.qweight & 0x0F, a.qweight >> 4], -1)
    assert codes.max() == 15 and codes.min() == 0 and a.zeros.max() <= 15
    step = a.scales.float().repeat_interleave(32, 1)
    assert (a.dequantize() - lin.weight).abs().max() < step.max()  # half a step, + the zero point's rounding
    assert (a.dequantize() - lin.weight).abs().mean() < 0.6 * (s.dequantize() - lin.weight).abs().mean()


@pytest.mark.parametrize("symmetric", [True, False])
def test_clip_search_lowers_rounding_error_on_heavy_tails(symmetric):
    from medslm.methods.quantize import quantize_linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    lin.weight.data = torch.randn(64, 256) ** 3 * 0.02  # outliers stretch the absmax/min-max grid
    plain = quantize_linear(lin, 4, 32, symmetric=symmetric)
    clip = quantize_linear(lin, 4, 32, symmetric=symmetric, clip=True)
    e_plain = ((plain.dequantize() - lin.weight) ** 2).sum(-1)
    e_clip = ((clip.dequantize() - lin.weight) ** 2).sum(-1)
    assert (e_clip <= e_plain + 1e-9).all() and e_clip.sum() < 0.98 * e_plain.sum()


def test_sequential_gptq_sees_the_quantized_blocks(tmp_path, corpus):
    """Block 0 gets the same inputs either way (identical integers); later blocks are calibrated on
    the quantized blocks' outputs, so their integers differ from the one-pass ones."""
    base = tiny.save_artifact("llama", tmp_path / "base")
    cfg = {"method": "quantize", "bits": 4, "group_size": 16, "algorithm": "gptq", "calibration": corpus,
           "samples": 4, "seq_len": 32, "symmetric": False, "act_order": True}
    one = compress(base, cfg, tmp_path / "one")
    seq = compress(base, cfg | {"sequential": True}, tmp_path / "seq")
    assert seq.meta.extra["quantization"]["scheme"] == "int4-gptq-g16-asym"
    m1, tok = ModelArtifact.open(one.path).load()
    m2, _ = ModelArtifact.open(seq.path).load()
    l1, l2 = m1.model.layers, m2.model.layers
    assert torch.equal(l1[0].mlp.down_proj.qweight, l2[0].mlp.down_proj.qweight)
    assert not torch.equal(l1[1].mlp.down_proj.qweight, l2[1].mlp.down_proj.qweight)
    m0, _ = base.load()
    err = (logits(m0, tok) - logits(m2, tok)).abs().max().item()
    assert 0 < err < 0.5


def test_gptq_chooses_the_tied_embedding_integers_for_the_head(tmp_path, corpus):
    """With a GPTQ config, an int4 tied embedding gets GPTQ's integers against the Hessian of the
    head's inputs (the final hidden states): on those inputs the head's output error is lower than
    with round-to-nearest integers for the same table and scales' grid."""
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    cfg = {"method": "quantize", "bits": 8, "algorithm": "gptq", "calibration": corpus, "samples": 8,
           "seq_len": 64, "embeddings": "int4"}
    g = compress(base, cfg, tmp_path / "g")
    from medslm.methods.quantize import rtn_codes
    from medslm.models.quantized import QuantEmbedding

    m0, tok = base.load()
    mg, _ = ModelArtifact.open(g.path).load()
    eg = mg.get_input_embeddings()
    w = m0.get_input_embeddings().weight.detach()
    q, sc, _ = rtn_codes(w, 4, eg.group)
    er = QuantEmbedding.from_codes(m0.get_input_embeddings(), q, sc, 4, eg.group)
    assert not torch.equal(eg.qweight, er.qweight)
    with torch.no_grad():  # the head's inputs on the calibration text, in the quantized model
        ids = torch.tensor([tok(open(corpus).read()).input_ids])
        x = mg.model(ids).last_hidden_state[0]
    err = {k: ((x @ (e.rows(slice(None)) - w).T) ** 2).sum().item() for k, e in (("gptq", eg), ("rtn", er))}
    assert err["gptq"] < err["rtn"], err


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_sequential_gptq_replays_blocks_as_the_model_runs_them(arch, corpus):
    """Running each block alone on recorded inputs (the fast path) gives the same integers as
    calibrating every block inside a full forward pass of the partly quantized model."""
    from medslm.methods.calibration import calibration_batches, calibration_texts, input_hessians
    from medslm.models.anatomy import blocks_prefix, decoder_layers
    from medslm.methods.gptq import GPTQConfig, _codes, gptq_sequential_
    from medslm.methods.quantize import quantize_, selected

    cfg = GPTQConfig(bits=4, group_size=16, symmetric=False, act_order=True, sequential=True)
    tok = tiny.tokenizer()
    batches = calibration_batches(tok, calibration_texts(corpus, 4, 0), 32)
    fast, slow = tiny.model(arch), tiny.model(arch)
    gptq_sequential_(fast, cfg, batches)
    layers = decoder_layers(slow)
    sel = selected(slow, cfg)
    prefix = blocks_prefix(slow)
    for i in range(len(layers)):
        names = [n for n in sel if n.startswith(f"{prefix}.{i}.")]
        h = input_hessians(slow, batches, {n: slow.get_submodule(n) for n in names}, stop=layers[i])
        quantize_(slow, cfg, names=names, codes=_codes(cfg, h))
    for n in sel:
        a, b = fast.get_submodule(n), slow.get_submodule(n)
        assert torch.allclose(a.dequantize(), b.dequantize(), atol=1e-6), n


def test_mixed_precision_keeps_chosen_modules_at_8_bits(tmp_path):
    base = tiny.save_artifact("llama", tmp_path / "base")
    cfg = {"method": "quantize", "bits": 4, "group_size": 16}
    q4 = compress(base, cfg, tmp_path / "q4")
    mix = compress(base, cfg | {"bits8": ["*.down_proj"]}, tmp_path / "mix")
    q8 = compress(base, cfg | {"bits": 8}, tmp_path / "q8")
    meta = mix.meta.extra["quantization"]
    assert meta["modules_8bit"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert meta["scheme"] == "int4-rtn-g16+2x8bit"
    m, tok = ModelArtifact.open(mix.path).load()
    layer = m.model.layers[0]
    assert layer.mlp.down_proj.bits == 8 and layer.mlp.down_proj.qweight.shape == (32, 64)
    assert layer.mlp.up_proj.bits == 4 and layer.mlp.up_proj.qweight.shape == (64, 16)
    assert q4.meta.bytes < mix.meta.bytes < q8.meta.bytes
    m0, _ = base.load()
    m4, _ = ModelArtifact.open(q4.path).load()
    assert (logits(m, tok) - logits(m0, tok)).abs().mean() < (logits(m4, tok) - logits(m0, tok)).abs().mean()
    with pytest.raises(MedslmError, match=r"bits8=\['\*.nothing'\] matched no quantized module"):
        compress(base, cfg | {"bits8": ["*.nothing"]}, tmp_path / "bad")


def test_generic_calibration_corpus_is_offline_prose():
    from medslm.methods.calibration import calibration_texts

    a = calibration_texts("generic", 16, 1)
    assert len(set(a)) == 16 and all(len(t) >= 1000 for t in a)
    assert a == calibration_texts("generic", 16, 1) and a != calibration_texts("generic", 16, 2)
    assert not any("patient" in t.lower() for t in a)


def test_gptq_artifact_round_trip(tmp_path, corpus):
    base = tiny.save_artifact("llama", tmp_path / "base")
    cfg = {"method": "quantize", "bits": 4, "group_size": 16, "algorithm": "gptq", "calibration": corpus,
           "samples": 4, "seq_len": 32}
    q = compress(base, cfg, tmp_path / "q")
    assert q.meta.extra["quantization"]["scheme"] == "int4-gptq-g16"
    assert q.meta.steps[-1]["calibration_tokens"] > 0
    m0, tok = base.load()
    m1, _ = ModelArtifact.open(q.path).load()
    err = (logits(m0, tok) - logits(m1, tok)).abs().max().item()
    assert 0 < err < 0.5
