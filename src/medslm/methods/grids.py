"""The rounding grids every quantize algorithm shares: a group's fp16 scale (and zero point),
nearest codes on it, and back. Below :mod:`medslm.methods.quantize` (the family) and
:mod:`medslm.methods.kquant` (llama.cpp's K-quant grids), which both build on it.
"""

from __future__ import annotations

import torch

from medslm.models.quantized import offset


def qparams(g: torch.Tensor, bits: int, symmetric: bool, clip: bool = False,
            fp16_min: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (fp16-representable) and zero point (integer, asymmetric only) of the rows of ``g``
    over its last dimension. ``clip``: shrink each range by the factor in 1.0 .. 0.75 that gives the
    least squared rounding error (outliers clipped when that helps the rest; the grid search of
    llama.cpp's k-quants and AWQ's clipping). ``fp16_min``: the error is measured with the offsets
    rounded to fp16 (the GGUF grid)."""
    best = None
    for shrink in (_SHRINKS if clip else (1.0,)):
        if symmetric and bits in (4, 5, 6):
            # the signed extreme maps to -8 (llama.cpp's Q4_0 rule; -16 for Q5_0, -32 for Q6_K): the
            # whole -8..7 range is used, where absmax / 7 leaves code -8 empty; the scale's sign
            # follows the extreme's
            ext = g.gather(-1, g.abs().argmax(-1, keepdim=True))[..., 0] * shrink
            s, z = _fp16_scale(ext / -2 ** (bits - 1)), None
        elif symmetric:
            qmax = 2 ** (bits - 1) - 1  # 127
            s, z = _fp16_scale(g.abs().amax(-1) * shrink / qmax), None
        else:
            levels = 2 ** bits - 1  # 255 or 15
            lo, hi = g.amin(-1).clamp(max=0) * shrink, g.amax(-1).clamp(min=0) * shrink  # 0 exact
            s = _fp16_scale((hi - lo) / levels)
            z = torch.round(-lo / s).clamp(0, levels)
        if not clip:
            return s, z
        s1, z1 = s[..., None], None if z is None else z[..., None]
        err = ((dequant(round_codes(g, s1, z1, bits, fp16_min), s1, z1, fp16_min) - g) ** 2).sum(-1)
        if best is None:
            best = (err, s, z)
        else:
            better = err < best[0]
            best = (torch.where(better, err, best[0]), torch.where(better, s, best[1]),
                    None if z is None else torch.where(better, z, best[2]))
    return best[1], best[2]


def _fp16_scale(s: torch.Tensor) -> torch.Tensor:
    """``s`` rounded to fp16 as stored, never 0 (a group of zeros, or one below fp16's range, gets
    the smallest fp16 step, so its codes are 0 and it dequantizes to 0)."""
    s = s.half().float()
    return torch.where(s == 0, torch.full_like(s, 2.0 ** -24), s)


_SHRINKS = tuple(1.0 - 0.0125 * i for i in range(21))  # 1.0 down to 0.75


def dequant(q: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, fp16_min: bool = False) -> torch.Tensor:
    if z is None:
        return q * s
    return q * s + offset(s, z) if fp16_min else (q - z) * s


def round_codes(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, bits: int,
                fp16_min: bool = False) -> torch.Tensor:
    """Integer codes of ``w`` for scale ``s`` (and zero point ``z``), broadcast over rows;
    ``fp16_min``: nearest to ``w`` on the grid ``q * s + fp16(-s * z)`` (GGUF's Q4_1)."""
    if z is None:
        qmax = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w / s), -qmax - 1, qmax)
    if fp16_min:
        return torch.clamp(torch.round((w - offset(s, z)) / s), 0, 2 ** bits - 1)
    return torch.clamp(torch.round(w / s) + z, 0, 2 ** bits - 1)
