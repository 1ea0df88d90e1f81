"""Teaching a base model to chat: the built-in Gemma turn template installed by fine-tuning, kept by
trimming, quantization and the GGUF export, and used by evaluation (--chat-template) and serving."""

from __future__ import annotations

import json

import pytest
from helpers import fixtures, tiny

from medslm.errors import ConfigError
from medslm.methods import compress
from medslm.models.chat_template import GEMMA_TURNS, render, user_turn


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    fixtures.medquad(root / "medquad")
    fixtures.meqsum(root / "meqsum")
    fixtures.medsafety(root / "medsafety")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    return root


def test_gemma_turns_render_as_gemma_writes_them():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Scurvy?"}]
    assert render(GEMMA_TURNS, msgs, bos_token="<bos>") == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nScurvy?<end_of_turn>\n<start_of_turn>model\n")
    # one user turn without the template's BOS: backends add their own
    assert user_turn(GEMMA_TURNS, "Q?\n", "<bos>") == "<start_of_turn>user\nQ?<end_of_turn>\n<start_of_turn>model\n"


def test_chat_finetune_installs_the_template_and_ends_answers_with_end_of_turn(tmp_path, data):
    from medslm.train.data import encode_sft

    base = tiny.save_artifact("gemma3", tmp_path / "base", spm=True, turns=True)
    _, tok0 = base.load()
    assert not tok0.chat_template
    ft = compress(base, {"method": "finetune", "tuning": "lora", "merge": True, "chat_template": True,
                         "data": "medquad:train,meqsum:train,medsafety:train", "max_steps": 2,
                         "batch_size": 4, "seq_len": 96, "precision": "bf16"}, tmp_path / "ft")
    model, tok = ft.load()
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert tok.chat_template == GEMMA_TURNS
    assert eot in model.generation_config.eos_token_id and tok.eos_token_id in model.generation_config.eos_token_id
    step = ft.meta.steps[-1]
    assert step["chat_template"]["template"] == "builtin:gemma" and step["precision"] == "bf16 mixed"
    assert ft.meta.extra["chat_template"]["sha"].startswith("sha256:")
    ids, labels, _ = encode_sft(tok, "Question: What is gout?\nAnswer:", " A kind of arthritis.", add_bos=True,
                                seq_len=96, chat_template=True)
    prompt = tok("<start_of_turn>user\nQuestion: What is gout?\nAnswer:<end_of_turn>\n<start_of_turn>model\n").input_ids
    assert ids[:len(prompt)] == prompt and ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    # as lm-eval scores it, the context's trailing whitespace (the turn's newline) opens the answer
    n = len(tok("<start_of_turn>user\nQuestion: What is gout?\nAnswer:<end_of_turn>\n<start_of_turn>model").input_ids)
    assert labels[:n] == [-100] * n and ids[-1] == eot == labels[-1] and labels[n:] == ids[n:]
    assert tok.decode(ids[n:-1]) == "\nA kind of arthritis."  # no space before the model's words


def test_template_survives_trim_quantize_and_gguf_and_eval_uses_it(tmp_path, data):
    pytest.importorskip("llama_cpp")
    from medslm.backends.hf import HFBackend
    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.evaluate.runner import as_chat, chat_template_of
    from medslm.export.gguf import export_gguf
    from medslm.requests import GenerateRequest, LoglikelihoodRequest

    base = tiny.save_artifact("gemma3", tmp_path / "base", spm=True, turns=True)
    ft = compress(base, {"method": "finetune", "tuning": "lora", "merge": True, "chat_template": True,
                         "data": "medquad:train", "max_steps": 1, "batch_size": 2, "seq_len": 64}, tmp_path / "ft")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(tiny.CORPUS[:4]))
    tr = compress(ft, {"method": "trim", "corpus": str(corpus)}, tmp_path / "trim")
    q = compress(tr, {"method": "quantize", "bits": 4, "target": "gguf"}, tmp_path / "q")
    assert q.load()[1].chat_template == GEMMA_TURNS
    out = export_gguf(q, tmp_path / "q.gguf", progress=False)
    ll, hf = LlamaCppBackend(str(out), threads=1, shared_context=False), HFBackend(str(q.path), threads=1)
    assert ll.chat_template == GEMMA_TURNS == hf.chat_template
    assert chat_template_of(base_hf := HFBackend(str(base.path), threads=1), "auto") is None
    with pytest.raises(ConfigError, match="no chat template"):
        chat_template_of(base_hf, "on")
    reqs = as_chat(hf, GEMMA_TURNS, [LoglikelihoodRequest("Question: What is gout?\nAnswer:", " arthritis"),
                                     GenerateRequest("Question: What is gout?\nAnswer:", ("\n",), 4)])
    assert reqs[0].context.startswith("<start_of_turn>user\n") and reqs[0].continuation == "arthritis"
    # both backends read the turn markers as the special tokens (one id each), with one BOS
    for b in (ll, hf):
        ids = b.tokens(reqs[0].context, True)
        assert ids.count(b.bos_id) == 1 and ids[1] == b.tokenize("<start_of_turn>", bos=False, special=True)[0]
    a, c = ll.loglikelihood(reqs[:1]), hf.loglikelihood(reqs[:1])
    assert abs(a[0][0] - c[0][0]) < 0.05 * max(1, len(hf.tokens("arthritis", False)))


def test_eval_results_record_the_template(tmp_path, data, capsys):
    from medslm.cli import main

    base = tiny.save_artifact("gemma3", tmp_path / "base", spm=True, turns=True)
    ft = compress(base, {"method": "finetune", "tuning": "lora", "merge": True, "chat_template": True,
                         "data": "meqsum:train", "max_steps": 1, "batch_size": 2, "seq_len": 64}, tmp_path / "ft")
    assert main(["eval", "--model", str(ft.path), "--tasks", "meqsum", "--limit", "2", "--chat-template", "auto",
                 "--output", str(tmp_path / "r"), "--no-decode-bench", "--bootstrap", "0"]) == 0
    r = json.loads(next((tmp_path / "r").glob("*meqsum.json")).read_text())
    assert r["task"]["chat_mode"] == "auto" and r["task"]["chat_template"].startswith("sha256:")
    assert r["task"]["chat_prompt"] is None  # MeQSum asks its instruction in the turn too
    assert main(["eval", "--model", str(base.path), "--tasks", "meqsum", "--limit", "2", "--chat-template", "on",
                 "--no-decode-bench", "--bootstrap", "0"]) != 0


def test_chat_form_asks_the_bare_question_in_training_and_evaluation(data):
    """A chat user types the question, not "Question: ...\\nAnswer:": MedQuAD and MedSafetyBench train
    and are asked in chat turns with their ``chat_prompt``; MeQSum keeps its instruction; plain
    prompts are unchanged."""
    from medslm.tasks import get_task
    from medslm.train.data import load_parts, training_pairs

    for name in ("medquad", "medsafety"):
        e = load_parts(f"{name}:train", limit=1)[0].examples[0]
        (chat_p, chat_t), = training_pairs(name, e, chat=True)
        (plain_p, plain_t), = training_pairs(name, e)
        assert chat_p == e.question and plain_p == f"Question: {e.question}\nAnswer:" and chat_t == plain_t
        task = get_task(name)
        assert task.chat_requests(e)[0].context == e.question
        assert task.requests(e)[0].context == plain_p
    e = load_parts("meqsum:train", limit=1)[0].examples[0]
    (p, _), = training_pairs("meqsum", e, chat=True)
    assert p.startswith("Summarize the patient's question") and p == training_pairs("meqsum", e)[0][0]
