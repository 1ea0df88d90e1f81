"""Vocabulary trimming: keep the tokens a domain corpus uses, cut the rest of the embedding.

Gemma 3 270M's tied 262,144 x 640 embedding is 63% of its weights; a medical corpus uses a small
fraction of those tokens. Kept: every token the corpus's tokenization uses, every token on a merge
path that can build one of them (so BPE still reaches them), byte-fallback tokens (<0x00>..<0xFF>,
or the 256 base symbols of byte-level BPE) and all added/special tokens. Merges whose parts and
result are all kept stay, in their original order.

Contract: in-domain text tokenizes identically (same token strings, ids remapped), so the model
sees the same inputs; out-of-vocabulary text still encodes (via shorter pieces and byte fallback).
Log-likelihoods of in-domain text change only by the probability mass the removed tokens held
(the softmax runs over fewer tokens), which is measured and recorded.

Why not a library: no maintained tool trims a Hugging Face fast tokenizer and the embedding
together (LLM-Streamline / "vocabulary trimming" papers ship research scripts for SentencePiece
only). Ushio et al. 2023, "Efficient Multilingual Language Model Compression through Vocabulary
Trimming", https://arxiv.org/abs/2305.15020.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from medslm.errors import MedslmError
from medslm.methods.base import MethodConfig, Transformed, load_dense, register_method

BYTE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@register_method("trim")
class TrimConfig(MethodConfig):
    method: Literal["trim"] = "trim"
    version: ClassVar[int] = 2  # 2: the corpus includes the evaluation prompts built on it
    corpus: str = Field("pubmedqa,medquad,medmcqa", description='datasets (comma-separated; NAME: every record, '
                        'NAME:SPLIT: that split or carve only, e.g. pubmedqa:fit@50) or a .txt file whose tokens are kept')
    min_count: int = Field(1, description='keep tokens used at least this often')
    @field_validator("min_count")
    @classmethod
    def _mc(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"min_count={v}: must be >= 1")
        return v


def task_texts(dataset: str, examples: list) -> list[str]:
    """What the evaluation tasks built on ``dataset`` send to a model: their prompts (templates
    such as "Choices:" or "Abstract:" included) and prompt + answer, exactly as scored."""
    from medslm.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest
    from medslm.tasks import TASKS, get_task

    out = []
    for name in TASKS.names():
        task = get_task(name)
        if task.dataset != dataset:
            continue
        for e in examples:
            if not task.keep(e):
                continue
            for r in task.requests(e):
                if isinstance(r, LoglikelihoodRequest):
                    out += [r.context, r.context + r.continuation]
                elif isinstance(r, (GenerateRequest, RollingRequest)):
                    out.append(r.context if isinstance(r, GenerateRequest) else r.text)
    return list(dict.fromkeys(out))


def corpus_texts(spec: str) -> list[str]:
    """The text fields of the named datasets and the prompts their evaluation tasks build on those
    records, or a text file. ``NAME``: every record of the dataset (its evaluation splits too:
    trimming learns no weights, but the kept vocabulary then covers the evaluated text, so a
    trimmed model is scored on text its vocabulary was chosen for); ``NAME:SPLIT``: that split or
    carve only (``pubmedqa:fit@50``, ``medquad:train``), as calibration reads it, so the held-out
    part an evaluation scores (``dev@50``, ``test``) also tests the vocabulary on unseen text:
    what a shipped model meets."""
    from pathlib import Path

    from medslm.methods.calibration import item_records

    if spec.endswith(".txt"):
        p = Path(spec)
        if not p.is_file():
            raise MedslmError(f"corpus={spec!r}: no such file")
        return [p.read_text()]
    texts = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, examples = item_records(item, spec, "corpus", every_split=True)
        for e in examples:
            for a in ("context", "question", "answer", "text", "case"):
                v = getattr(e, a, None)
                if isinstance(v, str) and v:
                    texts.append(v)
            for o in getattr(e, "options", None) or []:
                texts.append(o)
        texts += task_texts(name, examples)
    return texts


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def trim_tokenizer(tok, keep_used: set[int]) -> tuple[dict, list[int]]:
    """New tokenizer.json (as a dict) and the kept old ids (sorted = new id order)."""
    data = json.loads(tok.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise MedslmError(f"vocabulary trimming supports BPE tokenizers; this one is {model.get('type')}")
    vocab: dict[str, int] = model["vocab"]
    inv = {i: t for t, i in vocab.items()}
    pairs = _merge_pairs(model["merges"])
    by_result: dict[str, list[tuple[str, str]]] = {}
    for a, b in pairs:
        by_result.setdefault(a + b, []).append((a, b))
    keep = {inv[i] for i in keep_used if i in inv}
    keep |= {t for t in vocab if BYTE.match(t)}
    if not model.get("byte_fallback"):
        keep |= {t for t in vocab if len(t) == 1}  # byte-level BPE: the 256 base symbols
    for special in (model.get("unk_token"),):
        if special in vocab:
            keep.add(special)
    stack = list(keep)
    while stack:  # every way BPE can build a kept token stays possible
        t = stack.pop()
        for a, b in by_result.get(t, ()):
            for part in (a, b):
                if part in vocab and part not in keep:
                    keep.add(part)
                    stack.append(part)
    added = {a["content"]: a["id"] for a in data.get("added_tokens", [])}
    old_ids = sorted({vocab[t] for t in keep} | set(added.values()))
    remap = {o: n for n, o in enumerate(old_ids)}
    model["vocab"] = {t: remap[i] for t, i in vocab.items() if i in remap}
    merges = [(a, b) for a, b in pairs if a in keep and b in keep and a + b in keep]
    model["merges"] = [[a, b] for a, b in merges]
    for a in data.get("added_tokens", []):
        a["id"] = remap[a["id"]]
    _remap_post_processor(data.get("post_processor"), remap)
    return data, old_ids


def _remap_post_processor(pp, remap: dict[int, int]) -> None:
    if not pp:
        return
    if pp.get("type") == "Sequence":
        for p in pp.get("processors", []):
            _remap_post_processor(p, remap)
    for spec in (pp.get("special_tokens") or {}).values():
        if "ids" in spec:
            spec["ids"] = [remap[i] for i in spec["ids"]]
    for key in ("cls", "sep"):
        if isinstance(pp.get(key), list) and len(pp[key]) == 2:
            pp[key][1] = remap[pp[key][1]]


def build_tokenizer(tok, data: dict):
    """A tokenizer of the same class and settings over the trimmed tokenizer.json."""
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        Path(d, "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        cfg_file = Path(d, "tokenizer_config.json")
        cfg = json.loads(cfg_file.read_text())
        cfg.pop("added_tokens_decoder", None)  # ids changed; tokenizer.json's added_tokens rule
        cfg_file.write_text(json.dumps(cfg))
        for f in ("tokenizer.model", "vocab.json", "merges.txt"):  # slow-tokenizer files: stale now
            Path(d, f).unlink(missing_ok=True)
        return AutoTokenizer.from_pretrained(d)


def apply(art, cfg: TrimConfig) -> Transformed:
    from collections import Counter

    from tqdm.auto import tqdm

    model, tok = load_dense(art, "trim")
    texts = corpus_texts(cfg.corpus)
    counts: Counter[int] = Counter()
    for i in tqdm(range(0, len(texts), 256), desc="trim: tokenizing corpus", unit="batch",
                  disable=len(texts) < 2048):
        for ids in tok(texts[i:i + 256], add_special_tokens=False).input_ids:
            counts.update(ids)
    used = {i for i, c in counts.items() if c >= cfg.min_count}
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(tok, attr, None) is not None:
            used.add(getattr(tok, attr))
    data, old_ids = trim_tokenizer(tok, used)
    new_tok = build_tokenizer(tok, data)
    idx = torch.tensor(old_ids)
    emb = model.get_input_embeddings()
    old_vocab = emb.weight.shape[0]
    new_emb = torch.nn.Embedding(len(old_ids), emb.weight.shape[1], dtype=emb.weight.dtype)
    new_emb.weight.data = emb.weight.data[idx].clone()
    head = model.get_output_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    head_w = None if tied or head is None else head.weight.data[idx].clone()
    # resize through transformers (keeps subclasses such as Gemma's scaled embedding), then copy
    model.resize_token_embeddings(len(old_ids), mean_resizing=False)
    model.get_input_embeddings().weight.data.copy_(new_emb.weight.data)
    if head_w is not None:
        model.get_output_embeddings().weight.data.copy_(head_w)
        if getattr(model.get_output_embeddings(), "bias", None) is not None:
            model.get_output_embeddings().bias.data = head.bias.data[idx].clone()
    model.tie_weights()
    remap = {o: n for n, o in enumerate(old_ids)}
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = getattr(model.config, attr, None)
        if isinstance(v, int) and v in remap:
            setattr(model.config, attr, remap[v])
        gc = getattr(model, "generation_config", None)
        gv = getattr(gc, attr, None) if gc is not None else None
        if isinstance(gv, int) and gv in remap:
            setattr(gc, attr, remap[gv])
        elif isinstance(gv, list):
            setattr(gc, attr, [remap[x] for x in gv if x in remap])
    info = {"vocab_before": old_vocab, "vocab_after": len(old_ids), "corpus_texts": len(texts),
            "corpus_tokens": sum(counts.values()), "used_tokens": len(used)}
    return Transformed(model, new_tok, info=info, extra={"vocab_trimmed": [old_vocab, len(old_ids)]})
