"""Knowledge distillation: a teacher's knowledge into a (pruned, smaller) student.

- ``mode: logit`` (Hinton et al. 2015, https://arxiv.org/abs/1503.02531): minimize
  ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, next token)`` on a corpus.
- ``mode: sequence`` (Kim & Rush 2016, https://arxiv.org/abs/1606.07947): the teacher continues
  each corpus prompt greedily; the student is trained with cross-entropy on those continuations.

The typical use is Minitron-style (https://arxiv.org/abs/2407.14679): prune, then distill from the
unpruned model. Training is deterministic for a seed: batches are fixed up front, a checkpoint
(student, optimizer, step) is written every ``checkpoint_every`` steps under the medslm cache, and
a rerun with the same input and config resumes at the last checkpoint. Student and teacher must
share the vocabulary (trim after distilling). In a recipe, ``teacher: base`` is the recipe's model.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import Field, field_validator

from medslm.errors import MedslmError
from medslm.methods.base import MethodConfig, Transformed, load_dense, register_method


@register_method("distill")
class DistillConfig(MethodConfig):
    method: Literal["distill"] = "distill"
    teacher: str = Field("base", description="teacher: a model reference ('base' in a recipe: the recipe's model), "
                         "a served model http://HOST:PORT/v1#MODEL, or BACKEND:REF (llamacpp:t.gguf, vllm:DIR)")
    top_k: int = Field(20, description="logit mode with a served teacher: the teacher's top-k log-probabilities "
                       "per position (1..20, as the OpenAI API allows)")
    mode: Literal["logit", "sequence"] = Field("logit", description="logit (KL on the teacher's distribution) or sequence (the teacher's greedy continuations)")
    corpus: str = Field("pubmedqa,medquad", description='datasets (comma-separated) or a .txt file')
    steps: int = Field(100, description='optimizer steps')
    batch_size: int = Field(2, description='sequences per step')
    seq_len: int = Field(128, description='tokens per sequence')
    lr: float = Field(5e-5, description='learning rate')
    temperature: float = Field(2.0, description='distillation temperature')
    alpha: float = Field(0.5, description='weight of the distillation loss against cross-entropy (1: distillation only)')
    seed: int = Field(1234, description='seed of the data order')
    checkpoint_every: int = Field(25, description='steps between checkpoints (an interrupted run resumes)')
    report_to: str = Field("none", description="training metrics to: none, tensorboard, or transformers' other "
                           "integrations (wandb, mlflow, ...), comma-separated")
    @field_validator("steps", "batch_size", "seq_len", "checkpoint_every")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be a positive integer")
        return v

    @field_validator("top_k")
    @classmethod
    def _topk(cls, v: int) -> int:
        if not 1 <= v <= 20:
            raise ValueError(f"top_k={v}: 1..20 (the OpenAI API's logprobs bound)")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"alpha={v}: must be in [0, 1] (1 = distillation loss only)")
        return v

    @field_validator("temperature", "lr")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """alpha * T^2 * KL(p_teacher,T || p_student,T) + (1 - alpha) * CE; positions with label -100 skipped."""
    mask = labels != -100
    s = student_logits[mask].float()
    t = teacher_logits[mask].float()
    T = temperature
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1),
                                    log_target=True, reduction="batchmean") * T * T
    ce = torch.nn.functional.cross_entropy(s, labels[mask])
    return alpha * kl + (1 - alpha) * ce, kl.detach(), ce.detach()


def _batches(tok, texts: list[str], cfg: DistillConfig) -> list[torch.Tensor]:
    rng = random.Random(cfg.seed)
    seqs = [ids for ids in tok(texts, truncation=True, max_length=cfg.seq_len).input_ids if len(ids) > 8]
    if not seqs:
        raise MedslmError(f"distill: corpus {cfg.corpus!r} gave no text of more than 8 tokens")
    out = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for _ in range(cfg.steps):
        pick = [seqs[rng.randrange(len(seqs))] for _ in range(cfg.batch_size)]
        width = max(len(p) for p in pick)
        b = torch.full((len(pick), width), pad, dtype=torch.long)
        lab = torch.full((len(pick), width), -100, dtype=torch.long)
        for i, p in enumerate(pick):
            b[i, :len(p)] = torch.tensor(p)
            lab[i, :len(p) - 1] = torch.tensor(p[1:])
        out.append(torch.stack([b, lab]))
    return out


def _rows(tok, texts: list[str], cfg: DistillConfig) -> list[dict]:
    """Training rows (labels as the training loop expects: aligned with the inputs)."""
    seqs = [ids for ids in tok(texts, truncation=True, max_length=cfg.seq_len).input_ids if len(ids) > 8]
    if not seqs:
        raise MedslmError(f"distill: corpus {cfg.corpus!r} gave no text of more than 8 tokens")
    return [{"input_ids": list(ids), "labels": list(ids)} for ids in seqs]


def _teacher_rows(teacher, tok, rows: list[dict]) -> list[dict]:
    """Sequence-level KD: each text's second half replaced by the teacher's greedy continuation of
    its first half; the loss covers the teacher's tokens only."""
    out = []
    for r in rows:
        real = torch.tensor(r["input_ids"])
        half = max(4, len(real) // 2)
        with torch.no_grad():
            gen = teacher.generate(real[None, :half].to(teacher.device),
                                   attention_mask=torch.ones(1, half, dtype=torch.long, device=teacher.device),
                                   max_new_tokens=len(real) - half, do_sample=False,
                                   pad_token_id=tok.pad_token_id or 0)[0].tolist()
        out.append({"input_ids": gen, "labels": [-100] * half + gen[half:]})
    return out


def _shifted(rows: list[dict], tok, batch_size: int) -> list[torch.Tensor]:
    """Rows as padded (inputs, next-token labels) batches, as :func:`held_out` reads them."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = []
    for i in range(0, len(rows), batch_size):
        part = rows[i:i + batch_size]
        width = max(len(r["input_ids"]) for r in part)
        b = torch.full((len(part), width), pad, dtype=torch.long)
        lab = torch.full((len(part), width), -100, dtype=torch.long)
        for k, r in enumerate(part):
            n = len(r["input_ids"])
            b[k, :n] = torch.tensor(r["input_ids"])
            lab[k, :n - 1] = torch.tensor(r["labels"][1:])
        out.append(torch.stack([b, lab]))
    return out


def kd_objective(teacher, cfg: DistillConfig):
    """The training loop's loss for logit KD: the teacher's logits on the same batch, no gradient."""
    def loss(model, batch: dict, num_items=None):
        ids, att = batch["input_ids"], batch.get("attention_mask")
        s = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        with torch.no_grad():
            t = teacher(input_ids=ids, attention_mask=att).logits[:, :-1]
        return kd_loss(s, t, batch["labels"][:, 1:], cfg.temperature, cfg.alpha)[0]
    return loss


def held_out(student, teacher, batches, cfg: DistillConfig) -> float:
    """What the mode optimizes, on held-out text: KL to the teacher (logit), or cross-entropy on
    the teacher's own continuations (sequence)."""
    tot = 0.0
    dev = next(student.parameters()).device
    with torch.no_grad():
        for ids, lab in batches:
            ids, lab = ids.to(dev), lab.to(dev)
            if cfg.mode == "logit":
                tot += float(kd_loss(student(ids).logits, teacher(ids).logits, lab, cfg.temperature, 1.0)[1])
            else:
                s = student(ids).logits.float()
                tot += float(torch.nn.functional.cross_entropy(s.reshape(-1, s.shape[-1]), lab.reshape(-1),
                                                               ignore_index=-100))
    return tot / max(1, len(batches))


def _train_measured(student, tok, rows, cfg: DistillConfig, device: str, keys: tuple, measure, objective,
                    desc: str) -> dict:
    """The one training loop on ``rows`` (checkpointed under ``keys``), with ``measure()`` (the held-out
    distance to the teacher) before and after; the provenance facts. The student ends on the CPU."""
    from medslm.train import engine

    student.eval()
    before = measure()
    ckdir = engine.checkpoint_dir("distill", *keys, cfg.to_dict())
    facts = engine.train(student, tok, rows, ckdir=ckdir, epochs=1.0, max_steps=cfg.steps,
                         batch_size=cfg.batch_size, grad_accum=1, lr=cfg.lr, schedule="constant", warmup=0.0,
                         seed=cfg.seed, checkpoint_every=cfg.checkpoint_every, device=device, desc=desc,
                         loss=objective, report_to=cfg.report_to)
    student.eval()
    after = measure()
    engine.finished(ckdir)
    student.to("cpu")
    return {"held_out_before": round(before, 5), "held_out_after": round(after, 5),
            "final_loss": facts.get("last_loss"), "resumed_at": facts.get("resumed_at"),
            "steps": facts.get("steps"), "train_seconds": facts.get("train_seconds")}


def apply(art, cfg: DistillConfig) -> Transformed:
    """Distil on the one training loop (:mod:`medslm.train.engine`) with the KD objective."""
    from medslm.methods.calibration import calibration_texts
    from medslm.models.loading import resolve
    from medslm.train import engine

    if cfg.teacher == "base":
        raise MedslmError("distill: teacher 'base' means the recipe's model and only works inside a "
                          "recipe; pass a model reference (e.g. teacher: gemma3-270m)")
    from medslm.backends.base import is_served

    if is_served(cfg.teacher):
        return _apply_served(art, cfg)
    student, tok = load_dense(art, "distill")
    t_art = resolve(cfg.teacher).artifact()
    teacher, t_tok = load_dense(t_art, "distill (teacher)")
    if len(t_tok) != len(tok) or t_tok.get_vocab() != tok.get_vocab():
        raise MedslmError("distill: student and teacher vocabularies differ; distill before trimming "
                          "the vocabulary")
    device = engine.device_of("auto")
    teacher.eval().to(device)
    torch.manual_seed(cfg.seed)
    texts = calibration_texts(cfg.corpus, max(cfg.steps * cfg.batch_size, 64) + 16, cfg.seed)
    held_texts, train_texts = texts[:16], texts[16:] or texts  # held-out KL on texts never trained on
    held = _batches(tok, held_texts, cfg.model_copy(update={"steps": 4}))
    rows = _rows(tok, train_texts, cfg)
    if cfg.mode == "sequence":
        rows = _teacher_rows(teacher, tok, rows)
        held = _shifted(_teacher_rows(teacher, tok, _rows(tok, held_texts, cfg)), tok, cfg.batch_size)
    student.to(device)
    info = _train_measured(student, tok, rows, cfg, device, (art.hash, t_art.hash),
                           lambda: held_out(student, teacher, held, cfg),
                           kd_objective(teacher, cfg) if cfg.mode == "logit" else None, f"distill ({cfg.mode})")
    info = {"teacher_hash": t_art.hash,
            "held_out_metric": "kl_to_teacher" if cfg.mode == "logit" else "ce_on_teacher_sequences", **info}
    return Transformed(student, tok, info=info)


def _apply_served(art, cfg: DistillConfig) -> Transformed:
    """Distil from a teacher behind a backend (:mod:`medslm.train.teacher`): its top-k
    log-probabilities (logit mode) or its continuations (sequence mode)."""
    from medslm.backends.base import from_ref
    from medslm.methods.calibration import calibration_texts
    from medslm.train import engine, teacher as tt
    from medslm.train.data import wants_bos

    student, tok = load_dense(art, "distill")
    teacher = from_ref(cfg.teacher)
    t_desc = teacher.describe()
    add_bos = wants_bos(tok, student.config)
    texts = calibration_texts(cfg.corpus, max(cfg.steps * cfg.batch_size, 64) + 16, cfg.seed)
    held_texts, train_texts = texts[:16], texts[16:] or texts  # held out: never trained on
    device = engine.device_of("auto")
    student.to(device)
    if cfg.mode == "logit":
        rows = tt.topk_rows(teacher, tok, train_texts, k=cfg.top_k, seq_len=cfg.seq_len, add_bos=add_bos)
        held = tt.topk_rows(teacher, tok, held_texts, k=cfg.top_k, seq_len=cfg.seq_len, add_bos=add_bos)
        measure = lambda: tt.held_out_topk(student, held, cfg.temperature)  # noqa: E731
        objective, metric = tt.topk_objective(cfg.temperature, cfg.alpha), f"kl_to_teacher_top{cfg.top_k}"
    else:
        rows = tt.sequence_rows(teacher, tok, train_texts, seq_len=cfg.seq_len, add_bos=add_bos)
        held = _shifted(tt.sequence_rows(teacher, tok, held_texts, seq_len=cfg.seq_len, add_bos=add_bos), tok,
                        cfg.batch_size)
        measure = lambda: held_out(student, None, held, cfg)  # noqa: E731
        objective, metric = None, "ce_on_teacher_sequences"
    info = _train_measured(student, tok, rows, cfg, device, (art.hash, t_desc.get("hash")), measure, objective,
                           f"distill ({cfg.mode}, served teacher)")
    info = {"teacher": {k: t_desc.get(k) for k in ("backend", "model", "base_url", "hash")},
            "teacher_hash": t_desc.get("hash"), "held_out_metric": metric, **info, "examples": len(rows)}
    return Transformed(student, tok, info=info)
