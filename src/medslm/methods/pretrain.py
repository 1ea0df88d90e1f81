"""Continued (domain-adaptive) causal-LM pretraining on medical documents (Gururangan et al. 2020,
https://arxiv.org/abs/2004.10964): guidelines, MedQuAD answers, PubMedQA abstracts and MIMIC-III
notes when present. Documents are packed (each closed by EOS) into blocks of ``seq_len`` tokens;
a seeded ``holdout`` fraction of the documents is kept out of training and its perplexity is
measured before and after, so the step records what it changed. Full-parameter by default;
``tuning: lora`` trains an adapter instead (merged into the written model).
"""

from __future__ import annotations

import math
import random
from typing import Literal

from pydantic import Field, field_validator

from medslm.methods.base import Transformed, register_method
from medslm.methods.finetune import TrainingConfig


@register_method("pretrain")
class PretrainConfig(TrainingConfig):
    method: Literal["pretrain"] = "pretrain"
    corpus: str = Field("medquad:train", description='NAME[:SPLIT],... documents from guidelines, medquad, pubmedqa, or a .txt file')
    tuning: Literal["full", "lora"] = Field("full", description='full | lora', json_schema_extra={'flag': '--method'})
    holdout: float = Field(0.05, description='fraction of documents held out for perplexity')
    checkpoint_every: int = Field(100, description='steps between checkpoints (an interrupted run resumes)')
    @field_validator("holdout")
    @classmethod
    def _holdout(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1)")
        return v

    def learning_rate(self) -> float:
        return self.lr or 5e-5


def perplexity(model, blocks: list[dict], device: str) -> float:
    """Token perplexity of ``model`` on packed blocks."""
    import torch

    nll, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for b in blocks:
            ids = torch.tensor([b["input_ids"]], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            n += ids.shape[1] - 1
    return math.exp(nll / max(1, n))


def apply(art, cfg: PretrainConfig, *, stop_after: int | None = None) -> Transformed:
    from medslm.system import peak_rss_bytes
    from medslm.methods.base import load_dense
    from medslm.train import engine
    from medslm.train.data import DOC_FIELDS, documents, load_parts, pack, wants_bos
    from medslm.train.guard import check_contamination

    parts = load_parts(cfg.corpus, "corpus", allowed=DOC_FIELDS)
    guard = check_contamination(parts, cfg.check, cfg.allow_overlap, drop_overlap=cfg.drop_overlap)
    docs = documents(parts)
    rng = random.Random(cfg.seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    n_hold = int(round(len(docs) * cfg.holdout)) if len(docs) > 1 else 0
    held = [docs[i][1] for i in order[:n_hold]]
    train_docs = [docs[i][1] for i in order[n_hold:]]
    device = engine.device_of(cfg.device)
    model, tok = load_dense(art, "pretrain")
    if device != "cpu":
        model.to(device)
    bos = wants_bos(tok, model.config)
    rows = pack(tok, train_docs, cfg.seq_len, bos)
    held_rows = pack(tok, held, cfg.seq_len, bos)[:64]  # at most 64 blocks: a stable, quick estimate
    before = perplexity(model, held_rows, device) if held_rows else None
    if cfg.tuning == "lora":
        from peft import get_peft_model

        from medslm.methods.finetune import lora_config

        model = get_peft_model(model, lora_config(cfg))
    model.train()
    stats = [{"dataset": p.dataset, "split": p.resolved, "n": len(p.examples)} for p in parts]
    ckdir = engine.checkpoint_dir("pretrain", art.hash, cfg.to_dict(), stats)
    run = engine.train(model, tok, rows, ckdir=ckdir, epochs=cfg.epochs, max_steps=cfg.max_steps,
                       batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, lr=cfg.learning_rate(),
                       schedule=cfg.schedule, warmup=cfg.warmup, seed=cfg.seed,
                       checkpoint_every=cfg.checkpoint_every, device=device,
                       desc="pretrain", stop_after=stop_after, weight_decay=cfg.weight_decay,
                       precision=cfg.precision, report_to=cfg.report_to)
    if stop_after is not None and run["steps"] < run["total_steps"]:
        raise KeyboardInterrupt(f"stopped after step {run['steps']} (checkpoint kept in {ckdir})")
    if cfg.tuning == "lora":
        model = model.merge_and_unload()
    after = perplexity(model, held_rows, device) if held_rows else None
    model = model.to("cpu")
    engine.finished(ckdir)
    info = {"corpus": stats, "documents": len(docs), "held_out_documents": n_hold, "blocks": len(rows),
            "held_out_ppl_before": round(before, 4) if before else None,
            "held_out_ppl_after": round(after, 4) if after else None, "contamination": guard, **run,
            "peak_rss_mib": round(peak_rss_bytes() / 2**20)}
    extra = {"trained_on": stats}
    if guard["allowed"]:
        extra["contamination_allowed"] = guard["overlap"]
    return Transformed(model, tok, info=info, extra=extra)
