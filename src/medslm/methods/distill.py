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

import hashlib
import json
import random
from typing import Literal

import torch
from pydantic import Field, field_validator

from medslm.errors import MedslmError
from medslm.methods.base import MethodConfig, Transformed, load_dense, register_method


@register_method("distill")
class DistillConfig(MethodConfig):
    method: Literal["distill"] = "distill"
    teacher: str = Field("base", description="teacher model reference ('base' in a recipe: the recipe's model)")
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
    @field_validator("steps", "batch_size", "seq_len", "checkpoint_every")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be a positive integer")
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


def _sequence_batches(teacher, tok, batches, cfg):
    """Replace each text's second half by the teacher's greedy continuation of its first half."""
    out = []
    for bl in batches:
        ids, _ = bl
        rows, labs = [], []
        for row in ids:
            real = row[row != (tok.pad_token_id if tok.pad_token_id is not None else -1)]
            half = max(4, len(real) // 2)
            with torch.no_grad():
                gen = teacher.generate(real[None, :half], attention_mask=torch.ones(1, half, dtype=torch.long),
                                       max_new_tokens=len(real) - half, do_sample=False,
                                       pad_token_id=tok.pad_token_id or 0)[0]
            rows.append(gen)
            lab = torch.full_like(gen, -100)
            lab[half - 1:-1] = gen[half:]  # loss on the teacher's tokens only
            labs.append(lab)
        width = max(len(r) for r in rows)
        b = torch.full((len(rows), width), tok.pad_token_id or 0, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, l_) in enumerate(zip(rows, labs)):
            b[i, :len(r)] = r
            lab[i, :len(l_)] = l_
        out.append(torch.stack([b, lab]))
    return out


def held_out(student, teacher, batches, cfg: DistillConfig) -> float:
    """What the mode optimizes, on held-out text: KL to the teacher (logit), or cross-entropy on
    the teacher's own continuations (sequence)."""
    tot = 0.0
    with torch.no_grad():
        for ids, lab in batches:
            if cfg.mode == "logit":
                tot += float(kd_loss(student(ids).logits, teacher(ids).logits, lab, cfg.temperature, 1.0)[1])
            else:
                s = student(ids).logits.float()
                tot += float(torch.nn.functional.cross_entropy(s.reshape(-1, s.shape[-1]), lab.reshape(-1),
                                                               ignore_index=-100))
    return tot / max(1, len(batches))


def apply(art, cfg: DistillConfig) -> Transformed:
    from tqdm.auto import tqdm

    from medslm import settings
    from medslm.methods.calibration import calibration_texts
    from medslm.models.loading import resolve

    if cfg.teacher == "base":
        raise MedslmError("distill: teacher 'base' means the recipe's model and only works inside a "
                          "recipe; pass a model reference (e.g. teacher: gemma3-270m)")
    student, tok = load_dense(art, "distill")
    t_art = resolve(cfg.teacher).artifact()
    teacher, t_tok = load_dense(t_art, "distill (teacher)")
    if len(t_tok) != len(tok) or t_tok.get_vocab() != tok.get_vocab():
        raise MedslmError("distill: student and teacher vocabularies differ; distill before trimming "
                          "the vocabulary")
    teacher.eval()
    torch.manual_seed(cfg.seed)
    texts = calibration_texts(cfg.corpus, max(cfg.steps * cfg.batch_size, 64) + 16, cfg.seed)
    held_texts, train_texts = texts[:16], texts[16:] or texts  # held-out KL on texts never trained on
    held = _batches(tok, held_texts, cfg.model_copy(update={"steps": 4}))
    batches = _batches(tok, train_texts, cfg)
    if cfg.mode == "sequence":
        batches = _sequence_batches(teacher, tok, batches, cfg)
        held = _sequence_batches(teacher, tok, held, cfg)
    before = held_out(student, teacher, held, cfg)

    key = hashlib.sha256(json.dumps([art.hash, t_art.hash, cfg.to_dict()], sort_keys=True).encode()).hexdigest()[:20]
    ckdir = settings.cache_dir() / "checkpoints" / f"distill-{key}"
    ckdir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    start = 0
    ck = ckdir / "checkpoint.pt"
    if ck.is_file():
        state = torch.load(ck, weights_only=False)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"distill: resumed at step {start} from {ck}", flush=True)
    student.train()
    losses = []
    bar = tqdm(range(start, cfg.steps), desc=f"distill ({cfg.mode})", unit="step", initial=start,
               total=cfg.steps)
    for step in bar:
        ids, lab = batches[step]
        with torch.no_grad():
            t_logits = teacher(ids).logits if cfg.mode == "logit" else None
        s_logits = student(ids).logits
        if cfg.mode == "logit":
            loss, kl, ce = kd_loss(s_logits, t_logits, lab, cfg.temperature, cfg.alpha)
        else:
            loss = torch.nn.functional.cross_entropy(s_logits.float().reshape(-1, s_logits.shape[-1]),
                                                     lab.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            tmp = ck.with_suffix(".tmp")
            torch.save({"student": student.state_dict(), "optimizer": opt.state_dict(), "step": done}, tmp)
            tmp.replace(ck)  # atomic: a kill never leaves a half checkpoint
    student.eval()
    after = held_out(student, teacher, held, cfg)
    import shutil

    shutil.rmtree(ckdir, ignore_errors=True)  # trained: the checkpoint has served its purpose
    info = {"teacher_hash": t_art.hash,
            "held_out_metric": "kl_to_teacher" if cfg.mode == "logit" else "ce_on_teacher_sequences",
            "held_out_before": round(before, 5), "held_out_after": round(after, 5),
            "final_loss": round(losses[-1], 5) if losses else None, "resumed_at": start}
    return Transformed(student, tok, info=info)
