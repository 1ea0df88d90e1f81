"""Continued pretraining and fine-tuning (full, LoRA, QLoRA) on tiny random models."""

import json

from helpers import fixtures
import pytest
from helpers import tiny
import torch

from medslm.errors import ConfigError
from medslm.methods import compress, parse_config
from medslm.models.artifact import ModelArtifact

WORDS = ("aspirin heparin warfarin metformin insulin sepsis troponin dyspnea anemia asthma "
         "stroke lupus gout fever cough rash edema angina").split()


def write_pubmedqa(root, n=24):
    root.mkdir(parents=True, exist_ok=True)
    recs = {}
    for i in range(n):
        a, b, c = WORDS[i % len(WORDS)], WORDS[(3 * i + 1) % len(WORDS)], WORDS[(7 * i + 2) % len(WORDS)]
        recs[str(2000 + i)] = {
            "QUESTION": f"Does {a} therapy change {b} outcomes in trial {i}?",
            "CONTEXTS": [f"We randomized {10 + i} patients with {b} to {a} or placebo.",
                         f"The {c} rate after {a} was {i}% in study number {i}."],
            "LABELS": ["METHODS", "RESULTS"], "MESHES": ["Humans"], "YEAR": "2001",
            "final_decision": ["yes", "no", "maybe"][i % 3], "LONG_ANSWER": f"{a.title()} helps {b}."}
    (root / "ori_pqal.json").write_text(json.dumps(recs))
    return root


def write_medmcqa(root, n=20):
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"mq{i}", "question": f"Which drug treats {WORDS[i % len(WORDS)]} in case {i}?",
             "opa": WORDS[(i + 1) % 18], "opb": WORDS[(i + 2) % 18], "opc": WORDS[(i + 3) % 18],
             "opd": WORDS[(i + 4) % 18], "cop": i % 4, "exp": f"Because of {WORDS[(i + 5) % 18]}.",
             "subject_name": "Pharmacology", "topic_name": None, "choice_type": "single"} for i in range(n)]
    (root / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_pubmedqa(root / "pubmedqa")
    write_medmcqa(root / "medmcqa")
    fixtures.medquad(root / "medquad")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    return root


def loss_on(model, tok, rows):
    from medslm.train.engine import collate

    b = collate(tok.pad_token_id)(rows)
    with torch.no_grad():
        return float(model(**b).loss)


def sft_rows(art, spec="pubmedqa:fit@6,medmcqa:fit@5"):
    from medslm.train.data import build_sft, load_parts

    m, tok = art.load()
    return build_sft(load_parts(spec), tok, m.config, seq_len=128)[0]


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
@pytest.mark.parametrize("tuning", ["full", "lora", "qlora"])
def test_finetune_lowers_training_loss(tmp_path, data, arch, tuning):
    base = tiny.save_artifact(arch, tmp_path / "base")
    rows = sft_rows(base)
    m0, tok = base.load()
    before = loss_on(m0, tok, rows)
    cfg = {"method": "finetune", "data": "pubmedqa:fit@6,medmcqa:fit@5", "tuning": tuning,
           "max_steps": 12, "batch_size": 8, "lr": 1e-2 if tuning == "qlora" else 3e-3, "seq_len": 128, "merge": tuning != "full"}
    if tuning == "qlora":
        cfg["lora_targets"] = "q_proj,v_proj,up_proj,down_proj"
    out = compress(base, cfg, tmp_path / "ft")
    m1, _ = ModelArtifact.open(out.path).load()
    after = loss_on(m1, tok, rows)
    st = out.meta.steps[-1]
    assert after < before - 0.1, (before, after)
    assert st["steps"] == 12 and st["examples"] == len(rows)
    assert st["trainable_parameters"] < out.meta.parameters or tuning == "full"
    assert out.meta.extra["trained_on"][0]["split"] == "train/fit@6~1234"
    assert ModelArtifact.open(base.path).hash == base.hash  # the input is untouched


def test_lora_adapter_artifact_and_merge_equal(tmp_path, data):
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    ad = compress(base, {"method": "finetune", "data": "pubmedqa:fit@6", "tuning": "lora",
                         "max_steps": 4, "lr": 5e-3, "seq_len": 128, "lora_r": 4}, tmp_path / "adapter")
    assert ad.is_adapter and (ad.path / "adapter_config.json").is_file()
    assert not (ad.path / "model.safetensors").exists()  # only the adapter is stored
    assert (ad.path / "adapter_model.safetensors").stat().st_size < (base.path / "model.safetensors").stat().st_size
    assert ad.meta.extra["adapter"]["base_hash"] == base.hash
    # unmerged: peft's forward with the adapter active
    from peft import PeftModel

    b, tok = base.load()
    peft = PeftModel.from_pretrained(b, str(ad.path)).eval()
    ids = torch.tensor([tok("Abstract: We randomized patients.\nQuestion: Does it work?\nAnswer:").input_ids])
    with torch.no_grad():
        unmerged = peft(ids).logits
    merged_art = compress(ad, {"method": "merge"}, tmp_path / "merged")
    assert not merged_art.is_adapter and merged_art.step_chain() == "base -> finetune -> merge"
    m, _ = ModelArtifact.open(merged_art.path).load()
    with torch.no_grad():
        merged = m(ids).logits
    assert (merged - unmerged).abs().max().item() < 1e-4
    base_logits = ModelArtifact.open(base.path).load()[0](ids).logits
    assert (merged - base_logits).abs().max().item() > 1e-3  # the adapter changed something
    # the adapter artifact itself loads (base + adapter) and serves the hf backend
    from medslm.backends.hf import HFBackend

    be = HFBackend(str(ad.path))
    assert be.artifact.is_adapter


def test_adapter_with_changed_base_is_refused(tmp_path, data):
    from medslm.errors import ArtifactError

    base = tiny.save_artifact("gemma3", tmp_path / "base")
    ad = compress(base, {"method": "finetune", "data": "pubmedqa:fit@6", "max_steps": 1, "seq_len": 128},
                  tmp_path / "adapter")
    meta = json.loads((base.path / "medslm.json").read_text())
    meta["content_hash"] = "sha256:" + "0" * 64
    (base.path / "medslm.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="base changed"):
        ModelArtifact.open(ad.path).load()


def test_loss_masking_covers_only_answer_tokens(tmp_path, data):
    from medslm.tasks import get_task
    from medslm.train.data import encode_sft, load_parts, prompt_and_target

    tok = tiny.tokenizer()
    e = load_parts("pubmedqa:fit@6")[0].examples[0]
    prompt = get_task("pubmedqa").text(e)
    assert prompt_and_target("pubmedqa", e, explanations=False) == (prompt, " " + e.options[e.answer])
    ids, labels, cut = encode_sft(tok, prompt, " yes\nIt helps.", add_bos=True, seq_len=512)
    n_prompt = len(tok(prompt).input_ids)
    assert not cut and labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    # the answer tokens are exactly what the evaluation scores after the same prompt
    whole = tok(prompt + " yes\nIt helps.").input_ids
    assert ids[:-1] == whole and ids[0] == tok.bos_token_id
    # truncation keeps BOS, the end of the prompt and the first answer token
    ids2, labels2, cut2 = encode_sft(tok, prompt, " yes\nIt helps.", add_bos=True, seq_len=20)
    assert cut2 and len(ids2) <= 20 and ids2[0] == tok.bos_token_id
    first = next(i for i, x in enumerate(labels2) if x != -100)
    assert labels2[first] == ids[n_prompt] and ids2[first - 3:first] == ids[n_prompt - 3:n_prompt]


def test_carved_splits_are_disjoint_and_seeded(data):
    from medslm.tasks import get_task

    t = get_task("pubmedqa")
    fit, dev = t.examples("fit@6"), t.examples("dev@6")
    assert len(dev) == 6 and len(fit) == 18 and not {e.id for e in fit} & {e.id for e in dev}
    assert t.resolved_split == "train/dev@6~1234"
    assert [e.id for e in get_task("pubmedqa").examples("dev@6")] == [e.id for e in dev]
    other = {e.id for e in get_task("pubmedqa").examples("dev@6~7")}
    assert other != {e.id for e in dev}
    with pytest.raises(Exception, match="between 1 and 23"):
        t.examples("dev@24")


def test_contamination_guard(tmp_path, data):
    from medslm.train.data import load_parts
    from medslm.train.guard import ContaminationError, check_contamination

    # training on the carved part: checked against dev@6 and medppl, no overlap
    rep = check_contamination(load_parts("pubmedqa:fit@6"))
    assert rep["overlap"] == {} and rep["checked"]["pubmedqa:train/dev@6~1234"] == 6
    # the whole split is what pubmedqa evaluates on: every example overlaps
    with pytest.raises(ContaminationError, match=r"pubmedqa-2000 ~ pubmedqa-2000 \(exact\)"):
        check_contamination(load_parts("pubmedqa:train"))
    # a near-duplicate of one dev record slipped into training data is caught too
    dev = __import__("medslm.tasks", fromlist=["get_task"]).get_task("pubmedqa").examples("dev@6")
    parts = load_parts("pubmedqa:fit@6")
    import dataclasses

    twin = dataclasses.replace(dev[0], id="pubmedqa-copy", question=dev[0].question.replace("?", " ?!"))
    parts[0].examples.append(twin)
    with pytest.raises(ContaminationError, match=f"pubmedqa-copy ~ {dev[0].id}"):
        check_contamination(parts)
    rep = check_contamination(parts, allow_overlap=True)
    assert rep["allowed"] and rep["overlap"]["pubmedqa:train/dev@6~1234"] == 1


def test_allow_overlap_is_recorded(tmp_path, data):
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    cfg = {"method": "finetune", "data": "medmcqa:validation", "max_steps": 1, "seq_len": 128}
    from medslm.train.guard import ContaminationError

    with pytest.raises(ContaminationError, match="medmcqa:validation: 20 overlapping"):
        compress(base, cfg, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    out = compress(base, {**cfg, "allow_overlap": True}, tmp_path / "x")
    assert out.meta.extra["contamination_allowed"] == {"medmcqa:validation": 20}
    merged = compress(out, {"method": "quantize", "bits": 8, "group_size": 16}, tmp_path / "q")
    assert merged.meta.extra["contamination_allowed"] == {"medmcqa:validation": 20}  # inherited


@pytest.mark.parametrize("batches", ["length", "dataset"])
def test_finetune_resume_continues_same_step_and_order(tmp_path, data, batches):
    from medslm.methods import finetune

    base = tiny.save_artifact("gemma3", tmp_path / "base")
    cfg = parse_config({"method": "finetune", "data": "pubmedqa:fit@6,medmcqa:fit@5", "tuning": "full",
                        "max_steps": 6, "batch_size": 4, "lr": 1e-3, "seq_len": 128, "checkpoint_every": 2,
                        "batches": batches})
    straight = finetune.apply(base, cfg)
    with pytest.raises(KeyboardInterrupt):
        finetune.apply(base, cfg, stop_after=3)  # interrupted after step 3 (checkpoint at 2... and 3)
    resumed = finetune.apply(base, cfg)
    assert resumed.info["resumed_at"] in (2, 3) and resumed.info["steps"] == 6
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    diff = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    assert diff < 1e-5, diff


def test_pretrain_lowers_held_out_perplexity(tmp_path, data):
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    out = compress(base, {"method": "pretrain", "corpus": "pubmedqa:fit@6", "max_steps": 15, "lr": 3e-3,
                          "seq_len": 64, "batch_size": 4, "holdout": 0.2}, tmp_path / "cpt")
    st = out.meta.steps[-1]
    assert st["held_out_ppl_after"] < st["held_out_ppl_before"]
    assert st["blocks"] > 4 and st["held_out_documents"] == 4
    assert st["contamination"]["checked"]  # checked against pubmedqa dev@6 and medppl


@pytest.mark.parametrize("cfg,msg", [
    ({"method": "finetune", "tuning": "dora"}, "tuning='dora'"),
    ({"method": "finetune", "lr": 2.0}, "lr=2.0: must be in"),
    ({"method": "finetune", "tuning": "full", "merge": True}, "only LoRA/QLoRA"),
    ({"method": "finetune", "data": "mimic3"}, "'mimic3' cannot be used here"),
    ({"method": "pretrain", "holdout": 1.5}, "holdout=1.5"),
])
def test_train_configs_reject_bad_values(cfg, msg, data, tmp_path):
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    with pytest.raises(ConfigError, match=msg):
        compress(base, cfg, tmp_path / "o")


def test_cli_finetune_and_info(tmp_path, data, capsys):
    from medslm.cli import main

    base = tiny.save_artifact("gemma3", tmp_path / "base")
    rc = main(["finetune", "--model", str(base.path), "--data", "pubmedqa:fit@6", "--method", "lora",
               "--max-steps", "2", "--seq-len", "128", "--out", str(tmp_path / "ad")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "adapter; base" in out and "contamination guard" in out
    assert main(["models", "info", str(tmp_path / "ad")]) == 0
    info = capsys.readouterr().out
    assert "base -> finetune" in info and "adapter:" in info and str(base.path) in info


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_answer_only_loss_equals_the_models_loss(arch, tmp_path, data):
    from medslm.train.engine import answer_loss, collate

    base = tiny.save_artifact(arch, tmp_path / "base")
    m, tok = base.load()
    rows = sft_rows(base)[:5]
    b = collate(tok.pad_token_id)(rows)
    ref = m(**b).loss
    ours = answer_loss(m, b)
    assert abs(float(ref) - float(ours)) < 1e-5
    n = int((b["labels"][:, 1:] != -100).sum())
    assert abs(float(answer_loss(m, b, n * 2)) - float(ref) / 2) < 1e-5


def test_answer_loss_in_head_chunks_gives_the_same_loss_and_gradients(tmp_path, data, monkeypatch):
    """Above HEAD_CHUNK answer positions the head and the loss run chunk by chunk (checkpointed):
    the loss and every gradient are those of the whole."""
    from medslm.train import engine

    m, tok = tiny.save_artifact("gemma3", tmp_path / "base").load()
    b = engine.collate(tok.pad_token_id)(sft_rows(tiny.save_artifact("gemma3", tmp_path / "b2"))[:6])
    n = int((b["labels"][:, 1:] != -100).sum())
    assert n > 7

    def run():
        m.zero_grad()
        loss = engine.answer_loss(m, b)
        loss.backward()
        return float(loss), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}

    whole, gw = run()
    monkeypatch.setattr(engine, "HEAD_CHUNK", 7)
    chunked, gc = run()
    assert abs(whole - chunked) < 1e-5 and gw.keys() == gc.keys()
    assert max(float((gw[k] - gc[k]).abs().max()) for k in gw) < 1e-5


def test_no_eos_option(tmp_path, data):
    from medslm.train.data import encode_sft

    tok = tiny.tokenizer()
    a, la, _ = encode_sft(tok, "Question: x?\nAnswer:", " yes", add_bos=True, seq_len=64)
    b, lb, _ = encode_sft(tok, "Question: x?\nAnswer:", " yes", add_bos=True, seq_len=64, eos=False)
    assert a[-1] == tok.eos_token_id and b == a[:-1] and lb == la[:-1]
    cfg = parse_config({"method": "finetune", "eos": False})
    assert cfg.eos is False


def test_report_to_tensorboard_logs_the_losses_that_provenance_records(tmp_path, data, monkeypatch):
    pytest.importorskip("tensorboard")
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MEDSLM_CACHE", str(tmp_path / "cache"))
    art = tiny.save_artifact("llama", tmp_path / "base")
    ft = compress(art, {"method": "finetune", "tuning": "lora", "data": "pubmedqa:fit@6", "max_steps": 4,
                        "batch_size": 2, "seq_len": 64, "report_to": "tensorboard"}, tmp_path / "ft")
    step = ft.meta.steps[-1]
    logdir = Path(step["tensorboard_logdir"])
    assert logdir.is_dir() and str(logdir).startswith(str(tmp_path / "cache"))  # kept after the checkpoints go
    ev = EventAccumulator(str(logdir))
    ev.Reload()
    loss = [e.value for e in ev.Scalars("train/loss")]
    assert len(loss) == step["steps"] and loss[0] == pytest.approx(step["first_loss"], rel=1e-4)
    assert loss[-1] == pytest.approx(step["last_loss"], rel=1e-4)
    # the default stays off
    ft2 = compress(art, {"method": "finetune", "tuning": "lora", "data": "pubmedqa:fit@6", "max_steps": 1,
                         "batch_size": 2, "seq_len": 64}, tmp_path / "ft2")
    assert "tensorboard_logdir" not in ft2.meta.steps[-1]


def test_a_limit_per_dataset(data):
    from medslm.train.data import load_parts

    parts = load_parts("pubmedqa:fit@6,medmcqa:fit@5", limit={"pubmedqa": 3}, seed=1)
    assert [len(p.examples) for p in parts] == [3, 15] and "[3 of 18, seed 1]" in parts[0].resolved
    assert [e.id for e in parts[0].examples] == [e.id for e in load_parts("pubmedqa:fit@6", limit={"pubmedqa": 3}, seed=1)[0].examples]
    with pytest.raises(ConfigError, match=r"limit names \['medqa'\], which data='pubmedqa:fit@6' does not read"):
        load_parts("pubmedqa:fit@6", limit={"medqa": 3})


def test_repeat_weights_a_dataset_in_the_mixture(tmp_path, data):
    from medslm.methods.finetune import FinetuneConfig
    from medslm.train.data import build_sft, load_parts

    m, tok = tiny.save_artifact("gemma3", tmp_path / "base").load()
    parts = load_parts("pubmedqa:fit@6,medmcqa:fit@5")
    once, st1 = build_sft(parts, tok, m.config, seq_len=128)
    rows, st = build_sft(parts, tok, m.config, seq_len=128, repeat={"pubmedqa": 3})
    n_pqa = len(parts[0].examples)
    assert len(rows) == len(once) + 2 * n_pqa
    # each PubMedQA row three times, each MedMCQA row once, recorded in the provenance
    key = lambda r: tuple(r["input_ids"])  # noqa: E731
    counts = {k: sum(key(r) == k for r in rows) for k in map(key, once)}
    assert [counts[key(r)] for r in once] == [3] * n_pqa + [1] * (len(once) - n_pqa)
    assert st["parts"][0]["repeat"] == 3 and "repeat" not in st["parts"][1]
    assert FinetuneConfig(data="pubmedqa:fit@6,medmcqa", repeat="pubmedqa=3").repeat == {"pubmedqa": 3}
    for bad, msg in [("pubmedqa=0", "at least once"), ("pubmedqa", "write NAME=N"),
                     ("medqa=2", r"repeat names \['medqa'\], which data")]:
        with pytest.raises(ValueError, match=msg):
            FinetuneConfig(data="pubmedqa:fit@6,medmcqa", repeat=bad)


def test_dataset_batches_give_each_step_one_dataset():
    from medslm.train.engine import DatasetBatches

    groups = ["a"] * 10 + ["b"] * 7
    s = DatasetBatches(groups, lengths=list(range(17)), batch=4, seed=1)
    order = list(s)
    assert len(order) == len(s) == 12 + 8  # each dataset's last batch filled from its own rows
    assert set(order) == set(range(17))
    chunks = [order[k:k + 4] for k in range(0, len(order), 4)]
    assert all(len({groups[i] for i in c}) == 1 for c in chunks)
    assert all(len(set(c)) == 4 for c in chunks)
    assert list(DatasetBatches(groups, list(range(17)), 4, seed=1)) == order  # a resumed run sees the same
    s.set_epoch(1)
    assert list(s) != order


def test_finetune_batches_by_dataset(tmp_path, data, monkeypatch):
    """``batches: dataset``: every step the Trainer takes holds one dataset's rows (the default
    mixes them), recorded in the provenance with the answer tokens of each dataset."""
    from medslm.train import engine

    seen = []
    real = engine.collate

    def spy(pad):
        fn = real(pad)

        def wrapped(batch):
            seen.append([tuple(r["input_ids"]) for r in batch])
            return fn(batch)
        return wrapped

    monkeypatch.setattr(engine, "collate", spy)
    base = tiny.save_artifact("gemma3", tmp_path / "base")
    spec = "pubmedqa:fit@6,medmcqa:fit@5"
    kinds = {}
    m, tok = base.load()
    from medslm.train.data import build_sft, load_parts

    rows, st = build_sft(load_parts(spec), tok, m.config, seq_len=128)
    for r, d in zip(rows, st["dataset_of_row"]):
        kinds[tuple(r["input_ids"])] = d
    assert st["answer_tokens_by_dataset"]["medmcqa"] + st["answer_tokens_by_dataset"]["pubmedqa"] == st["answer_tokens"]
    ft = compress(base, {"method": "finetune", "data": spec, "tuning": "lora", "max_steps": 8,
                         "batch_size": 4, "seq_len": 128, "batches": "dataset"}, tmp_path / "ft")
    assert ft.meta.steps[-1]["batches"] == "one group per step: medmcqa, pubmedqa" and len(seen) >= 8  # (+ one prefetched)
    assert all(len({kinds[r] for r in b}) == 1 for b in seen)
    assert {kinds[r] for b in seen for r in b} == {"pubmedqa", "medmcqa"}
    seen.clear()
    compress(base, {"method": "finetune", "data": spec, "tuning": "lora", "max_steps": 8,
                    "batch_size": 4, "seq_len": 128}, tmp_path / "ft2")
    assert ft.meta.steps[-1]["answer_tokens_by_dataset"] == st["answer_tokens_by_dataset"]
    assert any(len({kinds[r] for r in b}) == 2 for b in seen)  # the default mixes them


def test_label_batches_give_label_sets_steps_of_their_own(tmp_path, data):
    """``batches: labels``: PubMedQA's decisions and MedMCQA's letters each get their own steps; the
    free-text answers (MedQuAD's) share theirs."""
    from medslm.methods.finetune import batch_groups
    from medslm.train.data import build_sft, load_parts

    m, tok = tiny.save_artifact("gemma3", tmp_path / "base").load()
    rows, st = build_sft(load_parts("pubmedqa:fit@6,medmcqa:fit@5,medquad"), tok, m.config, seq_len=256,
                         explanations=False)  # the answers alone: labels for two of the sets
    med = st["median_answer_tokens"]
    assert med["pubmedqa"] <= 8 and med["medmcqa"] <= 8 and med["medquad"] > 8, med
    groups = batch_groups("labels", st)
    assert {g for g, d in zip(groups, st["dataset_of_row"]) if d == "medquad"} == {"free text"}
    assert {g for g, d in zip(groups, st["dataset_of_row"]) if d != "medquad"} == {"pubmedqa", "medmcqa"}
    assert batch_groups("dataset", st) == st["dataset_of_row"] and batch_groups("length", st) is None


def test_cut_training_prompts_are_counted_per_dataset_and_warned(tmp_path, data, capsys):
    """PubMedQA prompts longer than seq_len are cut for training, while evaluation reads them
    whole: counted per dataset in the stats (and the artifact's provenance), and warned."""
    from medslm.train.data import build_sft, load_parts

    m, tok = tiny.save_artifact("gemma3", tmp_path / "base").load()
    parts = load_parts("pubmedqa:fit@6,medmcqa:fit@5")
    _, st = build_sft(parts, tok, m.config, seq_len=4096)
    assert st["truncated_by_dataset"] == {"pubmedqa": 0, "medmcqa": 0} and "warning" not in capsys.readouterr().err
    short = min(len(tok(e.context).input_ids) for e in parts[0].examples) // 2
    _, st = build_sft(parts, tok, m.config, seq_len=short)
    n = len(parts[0].examples)
    assert st["truncated_by_dataset"]["pubmedqa"] == n == st["truncated"] - st["truncated_by_dataset"]["medmcqa"]
    assert f"warning: {n} of {n} pubmedqa examples are longer than seq_len {short}" in capsys.readouterr().err
