"""A distillation teacher behind any backend: a model served elsewhere (``http://HOST:PORT/v1#MODEL``:
vLLM's server, llama.cpp's, ``medslm serve``, a hosted one) or another runtime in this process
(``llamacpp:teacher.gguf``, ``vllm:DIR``).

- **Sequence level** (Kim & Rush 2016), any tokenizer: the teacher continues the first half of each
  text, as text; the student learns those continuations under its own tokenizer.
- **Top-k logits** (sparse KD, as the OpenAI API exposes a distribution): the teacher's ``k`` most
  likely next tokens and their log-probabilities at every position of each text (``echo`` with
  ``logprobs=k``, tokens named by id). The student's distribution on those ids is pulled towards the
  teacher's, renormalized over them. Teacher and student must tokenize the text identically (one
  vocabulary: every Gemma 3 size and MedGemma share Gemma 3 270M's); otherwise it is refused,
  naming both tokenizers.

The in-process transformers teacher (full logits) stays in :mod:`medslm.methods.distill`; this
module only reads what a backend returns.
"""

from __future__ import annotations

import torch

from medslm.errors import MedslmError
from medslm.requests import GenerateRequest


def sequence_rows(teacher, tok, texts: list[str], *, seq_len: int, add_bos: bool) -> list[dict]:
    """Rows whose answer is the teacher's greedy continuation of each text's first half (the loss
    covers those tokens only); texts of 8 tokens or fewer, and empty continuations, are skipped."""
    from medslm.train.data import encode_sft

    prompts, lengths = [], []
    for ids in tok(texts, truncation=True, max_length=seq_len, add_special_tokens=False).input_ids:
        if len(ids) > 8:
            half = max(4, len(ids) // 2)
            prompts.append(tok.decode(ids[:half], skip_special_tokens=True))
            lengths.append(len(ids) - half)
    if not prompts:
        raise MedslmError("distill: the corpus gave no text of more than 8 tokens")
    conts = teacher.generate([GenerateRequest(p, until=(), max_tokens=n) for p, n in zip(prompts, lengths)])
    rows = []
    for p, c in zip(prompts, conts):
        if c.strip():
            ids, labels, _ = encode_sft(tok, p, c, add_bos=add_bos, seq_len=seq_len, eos=False)
            rows.append({"input_ids": ids, "labels": labels})
    if not rows:
        raise MedslmError(f"distill: the teacher ({describe(teacher)}) continued none of the texts")
    return rows


def describe(backend) -> str:
    d = backend.describe()
    return f"{d.get('backend')} {d.get('base_url') or d.get('model')}" + (
        f"#{d['model']}" if d.get("base_url") else "")


def topk_rows(teacher, tok, texts: list[str], *, k: int, seq_len: int, add_bos: bool) -> list[dict]:
    """Rows with the teacher's top-k targets: ``topk_ids[j]``/``topk_lp[j]`` the teacher's k most likely
    tokens at position ``j`` (predicted from the tokens before it), padded to ``k + 1`` with id 0 and
    -inf; position 0 has none."""
    if not hasattr(teacher, "prompt_top_logprobs"):
        raise MedslmError(f"distill: the {teacher.name} backend gives no top-k log-probabilities; serve the "
                          "teacher (medslm serve / vLLM) and pass its URL, or use mode: sequence")
    bos = [tok.bos_token_id] if add_bos and tok.bos_token_id is not None else []
    student, sent = [], []
    for ids in tok(texts, truncation=True, max_length=seq_len - len(bos), add_special_tokens=False).input_ids:
        if len(ids) > 8:
            sent.append(tok.decode(ids, skip_special_tokens=True))
            student.append(bos + tok(sent[-1], add_special_tokens=False).input_ids)
    if not sent:
        raise MedslmError("distill: the corpus gave no text of more than 8 tokens")
    got = teacher.prompt_top_logprobs(sent, k)
    width, vocab = k + 1, len(tok)
    rows = []
    for text, mine, (theirs, tops) in zip(sent, student, got):
        if theirs != mine or any(i >= vocab for t in tops if t for i in t):
            raise MedslmError(
                f"distill: top-k targets need one vocabulary, and the tokenizers differ: the student's "
                f"({type(tok).__name__} {tok.name_or_path or '?'}, {vocab} tokens) reads {text[:40]!r} as "
                f"{mine[:8]}..., the teacher's ({describe(teacher)}) as {theirs[:8]}...; distil with "
                "mode: sequence (any tokenizer), or trim the vocabulary after distilling")
        ids = [[0] * width]
        lps = [[float("-inf")] * width]
        for t in tops[1:]:
            items = sorted(t.items(), key=lambda x: -x[1])[:width]
            ids.append([i for i, _ in items] + [0] * (width - len(items)))
            lps.append([v for _, v in items] + [float("-inf")] * (width - len(items)))
        rows.append({"input_ids": mine, "labels": list(mine), "topk_ids": ids, "topk_lp": lps})
    return rows


def topk_kl(student_logits, topk_ids, topk_lp, mask, temperature: float):
    """KL(teacher || student) on the teacher's top-k support, both renormalized there, at temperature
    T (scaled by T^2 as Hinton et al.); positions where ``mask`` is false are skipped."""
    T = temperature
    s = torch.log_softmax(student_logits[mask].float() / T, -1).gather(-1, topk_ids[mask])
    t = topk_lp[mask].float() / T
    valid = torch.isfinite(t)
    pt = torch.softmax(t, -1)
    log_pt = torch.log_softmax(t, -1)
    ls = torch.log_softmax(s.masked_fill(~valid, float("-inf")), -1)
    kl = torch.where(valid, pt * (log_pt - ls), torch.zeros_like(pt)).sum(-1)
    return kl.mean() * T * T


def topk_objective(temperature: float, alpha: float):
    """The training loop's loss for top-k KD: ``alpha`` KL on the top-k support + (1 - alpha) CE."""
    def loss(model, batch: dict, num_items=None):
        ids, att = batch["input_ids"], batch.get("attention_mask")
        s = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        kl = topk_kl(s, batch["topk_ids"][:, 1:], batch["topk_lp"][:, 1:], mask, temperature)
        ce = torch.nn.functional.cross_entropy(s[mask].float(), labels[mask])
        return alpha * kl + (1 - alpha) * ce
    return loss


def held_out_topk(student, rows: list[dict], temperature: float, batch_size: int = 4) -> float:
    """Mean top-k KL to the teacher over ``rows`` (texts never trained on)."""
    from medslm.train.engine import collate

    dev = next(student.parameters()).device
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = {k: v.to(dev) for k, v in collate(0)(rows[i:i + batch_size]).items()}
            s = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            mask = b["labels"][:, 1:] != -100
            tot += float(topk_kl(s, b["topk_ids"][:, 1:], b["topk_lp"][:, 1:], mask, temperature))
            n += 1
    return tot / max(1, n)
