"""Supervised fine-tuning: full, LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) or QLoRA
(Dettmers et al. 2023, https://arxiv.org/abs/2305.14314) on instruction examples from the datasets.

Adapters come from peft, 4-bit NF4 bases from bitsandbytes, the loop from transformers' Trainer
(:mod:`medslm.train.engine`); medslm adds the data (:mod:`medslm.train.data`: the evaluation
prompt, loss on the answer only), the contamination guard (:mod:`medslm.train.guard`) and
provenance. ``tuning: lora|qlora`` writes an *adapter artifact* (the adapter, the tokenizer and a
``medslm.json`` naming the base model and its hash) unless ``merge: true``; ``medslm merge`` folds
an adapter into a new dense artifact later. A QLoRA adapter, trained against the NF4 base, is
merged into the base's full-precision weights (the usual practice; the NF4 error is not baked in).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medslm.methods.base import MethodConfig, Transformed, register_method


class TrainingConfig(MethodConfig):
    """What pretrain and finetune share: the schedule, LoRA, the contamination guard, the device."""

    epochs: float = Field(1.0, description='passes over the data')
    max_steps: int = Field(0, description='optimizer steps; > 0 overrides --epochs')
    batch_size: int = Field(4, description='sequences per step')
    grad_accum: int = Field(1, description='gradient accumulation steps')
    lr: float = Field(0.0, description="learning rate (0: the method's default)")
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field("cosine", description='learning-rate schedule')
    warmup: float = Field(0.03, description='warm-up fraction of the steps')
    weight_decay: float = Field(0.0, description='AdamW weight decay')
    seq_len: int = Field(512, description='tokens per sequence')
    lora_r: int = Field(16, description='LoRA rank')
    lora_alpha: int = Field(32, description='LoRA alpha')
    lora_dropout: float = Field(0.05, description='LoRA dropout')
    lora_targets: str = Field("all-linear", description='all-linear or module names, comma-separated')
    allow_overlap: bool = Field(False, description='train even if the data overlaps evaluation data (recorded)')
    drop_overlap: bool = Field(False, description='leave out training examples that overlap evaluation data')
    check: str = Field("", description='more evaluation sets the data must not overlap, e.g. medqa_4options:test')
    seed: int = Field(1234, description='seed of the data order and initialisation')
    checkpoint_every: int = Field(50, description='steps between checkpoints (an interrupted run resumes)')
    device: str = Field("auto", description='auto | cpu | cuda')
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 mixed precision on a CUDA GPU that has it, else fp32; bf16: also on "
                            "a CPU with AVX512-BF16/AMX (about 2x faster training there; fp32 master weights)")
    report_to: str = Field("none", description="training metrics to: none, tensorboard, or transformers' other "
                           "integrations (wandb, mlflow, ...), comma-separated")
    @field_validator("batch_size", "grad_accum", "seq_len", "lora_r", "lora_alpha", "checkpoint_every")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be a positive integer")
        return v

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0 (0: train for `epochs`)")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: float) -> float:
        if not 0 < v <= 100:
            raise ValueError("must be in (0, 100]")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1) (0: the method's default)")
        return v

    @field_validator("warmup", "lora_dropout")
    @classmethod
    def _frac(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1)")
        return v

    def learning_rate(self) -> float:
        return self.lr


@register_method("finetune")
class FinetuneConfig(TrainingConfig):
    method: Literal["finetune"] = "finetune"
    data: str = Field("pubmedqa:fit@50", description='NAME[:SPLIT],... e.g. pubmedqa:fit@50,medmcqa:fit@500 (fit@N: all but a held-out dev@N)')
    limit: int | dict[str, int] = Field(0, description='at most N examples per dataset (a seeded sample; 0: every '
                                        'example); in a config, also {dataset: N} (datasets not named: all)')
    repeat: dict[str, int] = Field(default_factory=dict, description='mixture weights: each example of a dataset '
                                   'trained N times per epoch, e.g. pubmedqa=3 (in a config {pubmedqa: 3}; '
                                   'datasets not named: once)')
    batches: Literal["length", "dataset", "labels"] = Field(
        "length", description="length: rows of similar length batch together (least padding); dataset: each "
        "step trains one dataset's rows; labels: a dataset whose answers are labels (median <= 8 answer "
        "tokens: PubMedQA's decisions, MedMCQA's letters) gets steps of its own, the free-text sets share "
        "theirs. The loss is a mean over a step's answer tokens, so in a mixed step a one-word answer is "
        "drowned by the long answers beside it")
    tuning: Literal["full", "lora", "qlora"] = Field("lora", description='full | lora | qlora', json_schema_extra={'flag': '--method'})
    merge: bool = Field(False, description='merge the LoRA adapter into a new dense model')
    explanations: bool = Field(True, description='train on explanations/long answers too (--no-explanations: the answer only)')
    # this teaches EOS everywhere: measured on Gemma 3 270M, P(EOS) 0.0002 -> 0.15 on medical text
    eos: bool = Field(True, description="close answers with EOS (--no-eos keeps the LM's EOS rate on plain text)")
    chat_template: bool = Field(False, description="train in chat form: each prompt a user turn, the answer the "
                                "model's turn (a base model without a template gets its family's built-in one, "
                                "saved in the artifact)")
    @field_validator("limit")
    @classmethod
    def _limit(cls, v):
        if any(n < 0 for n in (v.values() if isinstance(v, dict) else [v])):
            raise ValueError("must be >= 0 (0: every example)")
        return v

    @field_validator("repeat", mode="before")
    @classmethod
    def _repeat_text(cls, v):
        if isinstance(v, str):  # the flag's form: NAME=N,NAME=N
            out = {}
            for item in [t.strip() for t in v.split(",") if t.strip()]:
                name, eq, n = item.partition("=")
                if not eq or not n.strip().isdigit():
                    raise ValueError(f"{item!r}: write NAME=N, e.g. pubmedqa=3")
                out[name.strip()] = int(n)
            return out
        return v

    @field_validator("repeat")
    @classmethod
    def _repeat(cls, v):
        bad = {k: n for k, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"{bad}: each dataset is trained at least once (1); leave it out of data to drop it")
        return v

    @model_validator(mode="after")
    def _repeat_names(self):
        named = set(_names(self.data))
        if set(self.repeat) - named:
            raise ValueError(f"repeat names {sorted(set(self.repeat) - named)}, which data={self.data!r} does not read")
        return self

    @model_validator(mode="after")
    def _merge(self):
        if self.merge and self.tuning == "full":
            raise ValueError("merge=True: only LoRA/QLoRA adapters are merged; full fine-tuning "
                             "already writes a dense model")
        return self

    def learning_rate(self) -> float:
        return self.lr or (2e-5 if self.tuning == "full" else 2e-4)


def _names(spec: str) -> list[str]:
    return [t.strip().partition(":")[0] for t in str(spec).split(",") if t.strip()]


def lora_config(cfg):
    from peft import LoraConfig

    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [
        t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def load_for_training(art, cfg, device: str):
    """(model, tokenizer) ready to train: dense (full), dense + LoRA, or NF4 + LoRA (QLoRA)."""
    from medslm.errors import MedslmError
    from medslm.methods.base import load_dense

    if art.meta.extra.get("adapter"):
        raise MedslmError(f"{art.path} is an unmerged adapter; merge it first (medslm merge "
                          f"--model {art.path} --out DIR) and fine-tune the merged model")
    if cfg.tuning == "qlora":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise MedslmError("tuning=qlora needs bitsandbytes: pip install 'medslm[train]'")
        try:
            from peft import prepare_model_for_kbit_training
        except ImportError as e:
            raise MedslmError("tuning=qlora needs bitsandbytes and peft: pip install 'medslm[train]'") from e
        if art.meta.extra.get("quantization"):
            raise MedslmError(f"qlora quantizes the base itself; {art.path} is already quantized")
        compute = torch.bfloat16 if device.startswith("cuda") else torch.float32
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True)
        model = AutoModelForCausalLM.from_pretrained(art.path, quantization_config=q, dtype=compute,
                                                     device_map={"": device})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        tok = AutoTokenizer.from_pretrained(art.path)
    else:
        model, tok = load_dense(art, "finetune")
        if device != "cpu":
            model.to(device)
    if cfg.tuning in ("lora", "qlora"):
        try:
            from peft import get_peft_model
        except ImportError as e:
            raise MedslmError("LoRA needs peft: pip install 'medslm[train]'") from e
        model = get_peft_model(model, lora_config(cfg))
    model.train()
    return model, tok


LABEL_TOKENS = 8  # a median answer this short is a label (a decision, a letter, a relation), not text


def batch_groups(mode: str, stats: dict) -> list[str] | None:
    """Each row's step group for ``batches`` (None: length grouping over all rows)."""
    if mode == "length":
        return None
    rows = stats["dataset_of_row"]
    if mode == "dataset":
        return rows
    label_sets = {d for d, n in stats["median_answer_tokens"].items() if n <= LABEL_TOKENS}
    return [d if d in label_sets else "free text" for d in rows]


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def apply(art, cfg: FinetuneConfig, *, stop_after: int | None = None) -> Transformed:
    from medslm.system import peak_rss_bytes
    from medslm.train import engine
    from medslm.train.data import build_sft, load_parts
    from medslm.train.guard import check_contamination

    parts = load_parts(cfg.data, "data", limit=cfg.limit, seed=cfg.seed)
    guard = check_contamination(parts, cfg.check, cfg.allow_overlap, drop_overlap=cfg.drop_overlap)
    device = engine.device_of(cfg.device)
    model, tok = load_for_training(art, cfg, device)
    chat = None
    if cfg.chat_template:
        from medslm.models.chat_template import install

        chat = install(tok, model, getattr(model.config, "model_type", ""))
    rows, stats = build_sft(parts, tok, model.config, seq_len=cfg.seq_len,
                            explanations=cfg.explanations, chat_template=cfg.chat_template, eos=cfg.eos,
                            repeat=cfg.repeat)
    ckdir = engine.checkpoint_dir("finetune", art.hash, cfg.to_dict(), stats["parts"])
    n_train = trainable(model)
    run = engine.train(model, tok, rows, ckdir=ckdir, epochs=cfg.epochs, max_steps=cfg.max_steps,
                       batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, lr=cfg.learning_rate(),
                       schedule=cfg.schedule, warmup=cfg.warmup, seed=cfg.seed,
                       checkpoint_every=cfg.checkpoint_every, device=device,
                       desc=f"finetune ({cfg.tuning})", stop_after=stop_after,
                       weight_decay=cfg.weight_decay, precision=cfg.precision, report_to=cfg.report_to,
                       groups=batch_groups(cfg.batches, stats))
    if stop_after is not None and run["steps"] < run["total_steps"]:
        raise KeyboardInterrupt(f"stopped after step {run['steps']} (checkpoint kept in {ckdir})")
    info = {"data": stats["parts"], "examples": stats["examples"], "truncated": stats["truncated"],
            "truncated_by_dataset": stats["truncated_by_dataset"],
            "answer_tokens": stats["answer_tokens"],
            "answer_tokens_by_dataset": stats["answer_tokens_by_dataset"], "trainable_parameters": n_train,
            "contamination": guard, "lr": cfg.learning_rate(), **run,
            "peak_rss_mib": round(peak_rss_bytes() / 2**20)}
    extra = {"trained_on": stats["parts"]}
    if chat:
        info["chat_template"] = extra["chat_template"] = chat
    if guard["allowed"]:
        extra["contamination_allowed"] = guard["overlap"]
    model = model.to("cpu")
    engine.finished(ckdir)  # trained and in memory: the checkpoints have served their purpose
    if cfg.tuning == "full":
        return Transformed(model, tok, info=info, extra=extra)
    if cfg.merge:
        return Transformed(merged(model, art, cfg), tok, info=info, extra=extra)
    extra["adapter"] = {"type": cfg.tuning, "base": str(art.path.resolve()), "base_hash": art.hash,
                        "base_chain": art.step_chain(), "trainable_parameters": n_train}

    def write(tmp):
        model.save_pretrained(tmp, safe_serialization=True)  # the adapter only

    return Transformed(model, tok, info=info, extra=extra, write=write)


def merged(peft_model, art, cfg):
    """Fold a LoRA adapter into the base weights (QLoRA: into the full-precision base)."""
    if cfg.tuning == "qlora":
        import tempfile

        from peft import PeftModel

        from medslm.methods.base import load_dense

        with tempfile.TemporaryDirectory() as d:
            peft_model.save_pretrained(d)
            base, _ = load_dense(art, "merge")
            return PeftModel.from_pretrained(base, d).merge_and_unload()
    return peft_model.merge_and_unload()
