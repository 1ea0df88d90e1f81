"""Distillation from a served teacher (``teacher: http://HOST:PORT/v1#MODEL``): medslm serve on
loopback serves a tiny Gemma GGUF; a differently initialised tiny Gemma (the same vocabulary) learns
from its top-k log-probabilities or its continuations, and its held-out distance to the teacher falls.
A student with another tokenizer is refused for top-k, naming both; sequence level takes it."""

from __future__ import annotations

import random

import pytest
from helpers import tiny

pytest.importorskip("openai")
pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")

from medslm.errors import MedslmError  # noqa: E402
from medslm.methods import compress  # noqa: E402

KEY = "k" * 24


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL of medslm serve with the teacher GGUF, corpus file, the teacher's tmp dir)."""
    from helpers.serving import make_app, running

    from medslm.export.gguf import export_gguf
    from medslm.serve.runtime import load_runtime

    d = tmp_path_factory.mktemp("teacher")
    t = tiny.save_artifact("gemma3", d / "teacher", seed=7, spm=True)
    gguf = export_gguf(t, d / "teacher-f16.gguf", "f16", progress=False)
    rng = random.Random(0)
    corpus = d / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.sample(tiny.CORPUS, 2)) for _ in range(60)))
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSLM_OPENAI_API_KEY", KEY)
    with running(make_app(load_runtime(str(gguf), "llamacpp", threads=1), keys=[KEY], max_tokens=64)) as base:
        yield base + "/v1#test-model", str(corpus), d
    mp.undo()


def test_topk_targets_are_the_servers_distribution_by_id(served):
    from medslm.backends.base import from_ref
    from medslm.backends.llamacpp import LlamaCppBackend

    url, _, d = served
    be = from_ref(url)
    text = tiny.CORPUS[0]
    (ids, tops), = be.prompt_top_logprobs([text], 5)
    local = LlamaCppBackend(str(d / "teacher-f16.gguf"), threads=1, shared_context=False)
    assert ids == local.tokens(text, True) and tops[0] is None and all(len(t) in (5, 6) for t in tops[1:])
    # each actual token is among its position's alternatives, at the in-process log-probability
    from medslm.requests import RollingRequest

    want = local.loglikelihood_rolling([RollingRequest(text)])[0]
    assert abs(sum(t[i] for i, t in zip(ids[1:], tops[1:])) - want) < 1e-2
    assert all(max(t.values()) <= 0 for t in tops[1:])


@pytest.mark.parametrize("mode,metric", [("logit", "kl_to_teacher_top8"), ("sequence", "ce_on_teacher_sequences")])
def test_student_moves_towards_a_served_teacher(tmp_path, served, mode, metric):
    url, corpus, _ = served
    student = tiny.save_artifact("gemma3", tmp_path / "student", seed=1, spm=True)
    out = compress(student, {"method": "distill", "teacher": url, "mode": mode, "top_k": 8, "corpus": corpus,
                             "steps": 12, "batch_size": 4, "seq_len": 48, "lr": 3e-3, "alpha": 1.0,
                             "temperature": 1.0}, tmp_path / "out")
    step = out.meta.steps[-1]
    assert step["held_out_metric"] == metric and step["teacher"]["backend"] == "openai"
    print(mode, step["held_out_before"], step["held_out_after"])
    assert step["held_out_after"] < 0.9 * step["held_out_before"], step
    assert step["teacher_hash"].startswith("openai:")


def test_topk_refuses_another_tokenizer_naming_both_but_sequence_level_takes_it(tmp_path, served):
    url, corpus, _ = served
    other = tiny.save_artifact("llama", tmp_path / "llama", seed=1)  # byte-level vocabulary
    cfg = {"method": "distill", "teacher": url, "corpus": corpus, "steps": 2, "batch_size": 2, "seq_len": 32}
    with pytest.raises(MedslmError, match=r"tokenizers differ: the student's .*teacher's \(openai http"):
        compress(other, {**cfg, "mode": "logit"}, tmp_path / "a")
    out = compress(other, {**cfg, "mode": "sequence"}, tmp_path / "b")
    assert out.meta.steps[-1]["examples"] > 0


def test_a_server_naming_tokens_by_text_is_refused_for_topk():
    from medslm.backends.openai import OpenAIBackend

    class Reply:  # what a server without return_tokens_as_token_ids answers
        class usage:
            completion_tokens = 1
        choices = [type("C", (), {"logprobs": type("L", (), {"tokens": ["The", " cat", "!"],
                                                              "top_logprobs": [None, {" cat": -1.0}, {"!": -2.0}]})})]

    be = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    be._call = lambda **kw: Reply
    with pytest.raises(MedslmError, match="names tokens by text .* return_tokens_as_token_ids"):
        be.prompt_top_logprobs(["The cat"], 4)
