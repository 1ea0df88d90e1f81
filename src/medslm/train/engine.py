"""One training loop for pretrain, finetune and distill: Hugging Face ``Trainer`` with medslm's plumbing.

The Trainer brings what a mature loop needs (gradient accumulation, learning-rate schedules,
mixed precision on GPU, DDP/FSDP under ``accelerate launch``, checkpoints with optimizer,
scheduler and RNG state); medslm adds the data (already tokenized rows with -100 on the prompt), the loss (the answer-only
cross-entropy by default; distillation passes its KD loss),
a checkpoint folder keyed by (input artifact, config, data), automatic resume after an
interruption, and measured facts for provenance (tokens/s, wall time, peak memory, losses).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class DatasetBatches(torch.utils.data.Sampler):
    """Indices in an order where every ``batch`` consecutive rows come from one dataset.

    The answer-only loss is a mean over the answer tokens of a step. In a mixture, a row whose
    answer is one word (a PubMedQA decision: 3 tokens with the turn's newline and end) that shares a step with
    a row of 300-token answer gets under 1% of that step's gradient: measured on the medical
    assistant's mixture, PubMedQA was 57% of the rows and 4% of the answer tokens. One dataset per
    step gives each dataset the share of steps its rows have (``repeat`` weights it). transformers'
    samplers group by length or rebalance tokens, none by source, hence this one. Within a dataset,
    rows of similar length batch together (less padding); each dataset's last batch is filled by
    wrapping around its own rows; the order is a function of ``seed`` and the epoch, so a resumed
    run skips exactly the batches it trained.
    """

    def __init__(self, groups: list[str], lengths: list[int], batch: int, seed: int):
        self.lengths, self.batch, self.seed, self.epoch = lengths, batch, seed, 0
        self.members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            self.members.setdefault(g, []).append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(math.ceil(len(m) / self.batch) * self.batch for m in self.members.values())

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1009 + self.epoch)
        batches, mega = [], 16 * self.batch
        for name in sorted(self.members):
            m = self.members[name]
            order = [m[i] for i in torch.randperm(len(m), generator=g).tolist()]
            mine = []
            for s in range(0, len(order), mega):
                block = sorted(order[s:s + mega], key=lambda i: -self.lengths[i])
                mine += [block[k:k + self.batch] for k in range(0, len(block), self.batch)]
            last = mine[-1]
            fill = [i for i in order if i not in last] or order
            last += [fill[k % len(fill)] for k in range(self.batch - len(last))]  # rows it lacks, if any
            batches += mine
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[b]


def collate(pad_id: int):
    def fn(batch: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        lab = torch.full((len(batch), width), -100, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            lab[i, :n] = torch.tensor(r["labels"])
            att[i, :n] = 1
        out = {"input_ids": ids, "labels": lab, "attention_mask": att}
        if "topk_ids" in batch[0]:  # a served teacher's top-k targets (medslm.train.teacher)
            k = len(batch[0]["topk_ids"][0])
            out["topk_ids"] = torch.zeros((len(batch), width, k), dtype=torch.long)
            out["topk_lp"] = torch.full((len(batch), width, k), float("-inf"))
            for i, r in enumerate(batch):
                n = len(r["topk_ids"])
                out["topk_ids"][i, :n] = torch.tensor(r["topk_ids"])
                out["topk_lp"][i, :n] = torch.tensor(r["topk_lp"])
        return out
    return fn


def _body_and_head(model):
    """(transformer body, LM head, logit softcap) of a causal LM, through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, "base_model", None) if getattr(base, "base_model", None) is not base else None
    head = base.get_output_embeddings()
    if body is None or head is None:
        return None
    return body, head, getattr(base.config, "final_logit_softcapping", None)


# answer positions whose logits are held at once: Gemma 3's 262k-token head makes fp32 logits 1 MiB
# per position, and steps of eight long free-text answers (up to ~3,600 positions) peaked at 23 GB of
# RSS; above this many positions the head and the loss run chunk by chunk under activation
# checkpointing (the chunk's logits are recomputed in the backward), as fused linear-cross-entropy
# kernels do on GPU
HEAD_CHUNK = 1024


def answer_loss(model, batch: dict, num_items: int | None = None):
    """Causal-LM cross-entropy computed only where labels are set.

    The model's own loss applies the LM head at every position; with a 262k vocabulary (Gemma 3)
    that is most of the step's time and memory although SFT scores only the answer tokens. Here
    the body runs once, the hidden states at the scored positions are gathered, and the head is
    applied to those alone: the same loss (tested against ``model(**batch).loss``), several times
    faster and with a fraction of the memory. ``num_items``: divide the sum by this (the count
    over all gradient-accumulation micro-batches, as the Trainer passes it), else take the mean.
    """
    parts = _body_and_head(model)
    labels = batch["labels"]
    if parts is None:  # an architecture without the usual body/head split: the model's own loss
        return model(**batch).loss
    body, head, cap = parts
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
    target = labels[:, 1:]
    mask = target != -100
    h, t = hidden[:, :-1][mask], target[mask]

    def ce(hc, tc):
        logits = head(hc).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.nn.functional.cross_entropy(logits, tc, reduction="sum")

    if len(t) <= HEAD_CHUNK:
        loss = ce(h, t)
    else:  # the logits of one chunk at a time, recomputed for the backward
        from torch.utils.checkpoint import checkpoint

        loss = sum(checkpoint(ce, h[i:i + HEAD_CHUNK], t[i:i + HEAD_CHUNK], use_reentrant=False)
                   for i in range(0, len(t), HEAD_CHUNK))
    n = num_items if num_items is not None else mask.sum()
    return loss / n


def last_complete_checkpoint(ckdir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (its ``trainer_state.json`` is written
    last), or None. A checkpoint a kill cut short (seen under load: model and optimizer written, no
    trainer state) is removed, so the run resumes from the one before it and rewrites that step;
    transformers' ``get_last_checkpoint`` would pick the partial one and the resume would fail."""
    import shutil

    steps = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in Path(ckdir).glob("checkpoint-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit())
    for _, p in reversed(steps):
        if (p / "trainer_state.json").is_file():
            return str(p)
        shutil.rmtree(p, ignore_errors=True)
    return None


def checkpoint_dir(kind: str, *keys) -> Path:
    from medslm import settings

    key = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return settings.cache_dir() / "checkpoints" / f"{kind}-{key}"


def device_of(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from medslm.errors import ConfigError

        raise ConfigError(f"device={name!r}: CUDA is not available here; use device: cpu")
    return name


def bf16_training(precision: str, cuda: bool) -> bool:
    """Whether to train in bf16 mixed precision (autocast; fp32 master weights and optimizer)."""
    if precision == "fp32":
        return False
    if precision == "auto":
        return cuda and torch.cuda.is_bf16_supported()
    if cuda and not torch.cuda.is_bf16_supported():
        from medslm.errors import ConfigError

        raise ConfigError("precision=bf16: this GPU has no bf16; use precision: fp32")
    return True


def train(model, tokenizer, rows: list[dict], *, ckdir: Path, epochs: float, max_steps: int,
          batch_size: int, grad_accum: int, lr: float, schedule: str, warmup: float, seed: int,
          checkpoint_every: int, device: str, desc: str, stop_after: int | None = None,
          weight_decay: float = 0.0, loss=None, precision: str = "auto", report_to: str = "none",
          groups: list[str] | None = None) -> dict:
    """Train ``model`` in place on ``rows``; resume from the last checkpoint in ``ckdir``.

    ``loss(model, batch, num_items) -> tensor``: the objective (default :func:`answer_loss`).
    ``stop_after`` ends the run after that many optimizer steps, as an interruption would (tests).
    ``report_to``: ``none``, or transformers' integrations, comma-separated (``tensorboard``, ``wandb``,
    ``mlflow``, ...); TensorBoard logs go to :func:`log_dir` (they outlive the checkpoints).
    ``groups``: each row's group (its dataset, say); given, every optimizer step trains one group's
    rows (:class:`DatasetBatches`), else rows of similar length batch together.
    """
    objective = loss or answer_loss
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments

    transformers.utils.logging.set_verbosity_error()
    cuda = device.startswith("cuda")
    bf16 = bf16_training(precision, cuda)
    ckdir.mkdir(parents=True, exist_ok=True)
    targets = [t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none"]
    others = [t for t in targets if t != "tensorboard"]
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun / accelerate launch set it
    per_step = batch_size * grad_accum * world
    sampler = DatasetBatches(groups, [len(r["input_ids"]) for r in rows], per_step, seed) if groups else None
    steps_per_epoch = math.ceil((len(sampler) if sampler else len(rows)) / batch_size / grad_accum / world)
    total = max_steps if max_steps > 0 else max(1, math.ceil(steps_per_epoch * epochs))
    args = TrainingArguments(
        output_dir=str(ckdir), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, max_steps=total,
        lr_scheduler_type=schedule, warmup_steps=warmup, weight_decay=weight_decay,
        logging_steps=max(1, min(10, total // 10)), save_strategy="steps", save_steps=checkpoint_every,
        save_total_limit=2, seed=seed, data_seed=seed, report_to=others, use_cpu=not cuda, bf16=bf16,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False,
        optim="adamw_torch", include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length",  # mixed datasets: short rows batch together
    )
    losses: list[tuple[int, float]] = []

    class Record(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))

        def on_step_end(self, a, state, control, **kw):
            if stop_after is not None and state.global_step >= stop_after:
                control.should_save = True
                control.should_training_stop = True

    class AnswerTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, True, num_items_in_batch)
            n = num_items_in_batch
            if n is not None and torch.is_tensor(n):
                n = n.to(inputs["labels"].device)
            return objective(model, inputs, n)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    trainer = AnswerTrainer(model=model, args=args, train_dataset=Rows(rows), data_collator=collate(pad),
                      callbacks=[Record()] + tensorboard(targets, ckdir))
    last = last_complete_checkpoint(ckdir)
    if last:
        print(f"{desc}: resuming from {last}", flush=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - t0
    state = trainer.state
    start = int(last.rsplit("-", 1)[-1]) if last else 0
    done = state.global_step
    tokens = int(state.num_input_tokens_seen or 0)
    info = {"steps": done, "resumed_at": start, "train_loss": round(float(out.training_loss), 5),
            "first_loss": round(losses[0][1], 5) if losses else None,
            "last_loss": round(losses[-1][1], 5) if losses else None,
            "train_seconds": round(wall, 1), "tokens_seen": tokens, "device": device,
            "tokens_per_s": round(tokens / wall, 1) if wall > 0 and not last else None,
            "examples": len(rows), "batch_size": batch_size, "grad_accum": grad_accum,
            "total_steps": total, "precision": "bf16 mixed" if bf16 else "fp32",
            "batches": (f"one group per step: {', '.join(sorted(set(groups)))}" if sampler
                        else "grouped by length")}
    if "tensorboard" in targets:
        info["tensorboard_logdir"] = str(log_dir(ckdir))
    if cuda:
        info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if getattr(model, "training", False):
        model.eval()
    return info


def log_dir(ckdir: Path) -> Path:
    """Where a run's TensorBoard events go: beside the checkpoints, kept after training."""
    from medslm import settings

    return settings.cache_dir() / "logs" / ckdir.name


def tensorboard(targets: list[str], ckdir: Path) -> list:
    if "tensorboard" not in targets:
        return []
    try:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback
    except ImportError as e:
        from medslm.errors import MedslmError

        raise MedslmError("--report-to tensorboard needs the tensorboard package: pip install tensorboard") from e
    d = log_dir(ckdir)
    d.mkdir(parents=True, exist_ok=True)
    print(f"training metrics: tensorboard --logdir {d}", flush=True)
    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(d)))]


def finished(ckdir: Path) -> None:
    """The artifact is written: the checkpoints have served their purpose."""
    shutil.rmtree(ckdir, ignore_errors=True)
