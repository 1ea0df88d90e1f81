"""Recovery of a quantized model by distillation on its own grid (quantization-aware training after GPTQ).

GPTQ chooses each layer's integers to reproduce that layer's outputs; the errors of all layers
still add up at the logits (on a fine-tune of Gemma 3 270M, +12% medical perplexity in Q4_0). This
step then trains the quantized model to reproduce the dense model's next-token distributions
(KL divergence at sampled positions of the calibration texts), with the integers free to move on
the same grid: each block-of-32 layer (Q4_0, Q4_1, Q5_0, Q8_0: ``QuantLinear``) gets a latent
code ``v`` per weight, started at GPTQ's integer, and a log-scale per group started at GPTQ's fp16
scale; the forward pass uses ``clamp(round(v)) * scale`` with the straight-through estimator for
the rounding (Bengio et al. 2013; learned scales as LSQ, Esser et al. 2019,
https://arxiv.org/abs/1902.08153; end-to-end on a fixed grid as EfficientQAT's E2E-QP,
https://arxiv.org/abs/2407.11062). At the end the scales are rounded to fp16 and the codes to the
nearest integers in range, so the layer is again exactly what a GGUF block stores and
``medslm export`` writes it as it is.

Trained: the codes and scales of every ``QuantLinear``. Not trained: K-quant layers (their grid is
two-level: 6-bit sub-block scales under an fp16 scale), the embedding table and a tied head read
from it (their gradient is the 262k-row head's; they keep the integers GPTQ gave them), and every
float parameter (norms, biases), so the file's tensor types and bytes do not change.

Why not a library: torchao's QAT fake-quantizes fp32 weights with its own scale rules (not the
GGUF blocks' fp16 scales and -8..7 / 0..15 codes) and starts from the float weights, not from GPTQ's
integers; auto-round's signed-gradient rounding needs its own export path. This step has to end on
the exact integers and scales medslm's GGUF writer stores.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from medslm.models.anatomy import set_submodule
from medslm.methods.grids import round_codes
from medslm.models.quantized import QuantLinear, pack_codes, unpack_codes


class _GridLinear(nn.Module):
    """A QuantLinear made trainable on its grid: latent codes ``v`` and log-scales ``a``."""

    def __init__(self, ql: QuantLinear):
        super().__init__()
        self.src = ql
        q = unpack_codes(ql.qweight, ql.bits, ql.in_features, ql.symmetric)
        self.register_buffer("q0", q)
        self.v = nn.Parameter(q.float())
        self.a = nn.Parameter(torch.zeros(ql.scales.shape))
        self.register_buffer("s0", ql.scales.float())
        if ql.symmetric:
            self.lo, self.hi = -2 ** (ql.bits - 1), 2 ** (ql.bits - 1) - 1
            self.register_buffer("z", None)
        else:
            self.lo, self.hi = 0, 2 ** ql.bits - 1
            self.register_buffer("z", ql.zeros.float())
        self.bias = ql.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def codes(self) -> torch.Tensor:
        v = self.v
        return torch.clamp(v + (torch.round(v) - v).detach(), self.lo, self.hi)  # straight-through

    def weight(self) -> torch.Tensor:
        ql = self.src
        g = self.codes().reshape(ql.out_features, -1, ql.group_size)
        s = (self.s0 * torch.exp(self.a))[..., None]
        if self.z is not None:
            g = g - self.z[..., None]
        return (g * s).reshape(ql.out_features, ql.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight().to(x.dtype),
                                    None if self.bias is None else self.bias.to(x.dtype))

    def frozen(self) -> tuple[QuantLinear, int]:
        """(the trained layer as stored, how many of its integers changed): fp16 scales, the nearest
        in-range integers (for Q4_1, the offset a block stores follows the new scale: fp16(-scale * zero))."""
        ql = self.src
        with torch.no_grad():
            s = (self.s0 * torch.exp(self.a)).half()
            s = torch.where(s == 0, self.src.scales, s)  # never a zero scale
            q = torch.clamp(torch.round(self.v), self.lo, self.hi)
            if ql.fp16_min:  # the stored offset is fp16(-s * z): the codes nearest to the trained weight
                g = q.reshape(ql.out_features, -1, ql.group_size)
                s1, z1 = s.float()[..., None], self.z[..., None]
                q = round_codes((g - z1) * s1, s1, z1, ql.bits, fp16_min=True).reshape(q.shape)
            ql.qweight = pack_codes(q.to(torch.int16), ql.bits, ql.symmetric)
            ql.scales = s
        return ql, int((q != self.q0).sum())


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student), in nats."""
    s = torch.log_softmax(student_logits.float().reshape(-1, student_logits.shape[-1]), -1)
    t = torch.log_softmax(teacher_logits.float().reshape(-1, teacher_logits.shape[-1]), -1)
    return nn.functional.kl_div(s, t, log_target=True, reduction="batchmean")


def mean_kl(student: nn.Module, teacher: nn.Module, batches: list[torch.Tensor], every: int = 4) -> float:
    """KL(teacher || student) per position, every ``every``-th position of each batch, averaged."""
    tot = n = 0
    with torch.no_grad():
        for b in batches:
            keep = torch.arange(0, b.shape[1], every)
            t = teacher(b, logits_to_keep=keep, use_cache=False).logits
            s = student(b, logits_to_keep=keep, use_cache=False).logits
            tot += float(_kl(s, t)) * keep.numel()
            n += keep.numel()
    return tot / max(n, 1)


def recover_(model: nn.Module, teacher: nn.Module, batches: list[torch.Tensor], held: list[torch.Tensor],
             steps: int, lr: float, scale_lr: float, accumulate: int = 4, positions: int = 64,
             seed: int = 1234) -> dict:
    """In place: train every QuantLinear of ``model`` on its grid to match ``teacher``'s
    next-token distributions on ``batches`` (``steps`` optimizer steps of ``accumulate`` texts,
    ``positions`` sampled positions per text, in fp32); returns the held-out KL before and after."""
    from tqdm import tqdm

    grids = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not grids:
        return {"recovered_layers": 0}
    before = mean_kl(model, teacher, held)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {n: _GridLinear(m) for n, m in grids.items()}
    for n, w in wrapped.items():
        set_submodule(model, n, w)
    groups = [{"params": [w.v for w in wrapped.values()], "lr": lr},
              {"params": [w.a for w in wrapped.values()], "lr": scale_lr}]
    opt = torch.optim.Adam(groups)
    rng = random.Random(seed)
    order: list[int] = []
    teacher.eval()
    model.eval()  # no dropout; gradients still flow
    bar = tqdm(range(steps), desc="quantize: recovery", unit="step")
    try:
        for _ in bar:
            total = 0.0
            for _ in range(accumulate):
                if not order:
                    order = list(range(len(batches)))
                    rng.shuffle(order)
                b = batches[order.pop()]
                n = b.shape[1]
                keep = torch.tensor(sorted(rng.sample(range(n), min(positions, n))))
                with torch.no_grad():
                    t = teacher(b, logits_to_keep=keep, use_cache=False).logits
                s = model(b, logits_to_keep=keep, use_cache=False).logits
                loss = _kl(s, t) / accumulate
                loss.backward()
                total += loss.item()
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(kl=f"{total:.4f}")
    finally:  # even when interrupted the model is left as stored layers
        changed = 0
        for n, w in wrapped.items():
            ql, c = w.frozen()
            set_submodule(model, n, ql)
            changed += c
    after = mean_kl(model, teacher, held)
    total_w = sum(m.n_quantized for m in grids.values())
    return {"recovered_layers": len(grids), "recovery_kl": [round(before, 5), round(after, 5)],
            "recovery_codes_changed": round(changed / total_w, 5)}
