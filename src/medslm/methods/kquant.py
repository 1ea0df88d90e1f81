"""llama.cpp's Q4_K_M as a grid medslm chooses integers on (``medslm quantize --target q4_k_m``).

llama.cpp's Q4_K_M is a per-tensor mixture (llama.cpp's ``llama_tensor_get_type``): Q4_K for most
weights; Q6_K for ``attn_v`` and ``ffn_down`` in the layers its ``use_more_bits`` picks (the first
and last eighth, and every third between); for a tied embedding, the output rule (Q6_K, or Q8_0
where its width is not a multiple of 256, as Gemma 3 270M's 640 is not; medslm's ``embeddings=auto``
follows it, the Q6_K table's integers rounded on its searched grid); and,
for a tensor whose rows do not split into 256-weight super-blocks, its fallback (Q4_K -> Q5_0,
Q6_K -> Q8_0); an untied LM head the output rule, an untied input embedding Q4_K (Q5_0 as its
fallback). medslm gives every module the same type, so the file has llama.cpp's Q4_K_M's
tensor types and bytes, with integers chosen by RTN or GPTQ on exactly the grid the block stores:

- a Q4_K super-block's fp16 ``d``/``dmin`` and 6-bit sub-block scales and mins are fixed first
  (:func:`q4_k_grid`): each sub-block's scale and min by the weighted least-squares search
  llama.cpp's reference quantizer runs (so weights already on a K-quant grid find it again), then
  each 6-bit value the floor or ceiling of its exact value, whichever rounds the sub-block with less
  squared error;
- Q6_K likewise with int8 sub-block scales (:func:`q6_k_grid`);
- the integers then come from the fixed grid: round to nearest, or GPTQ with static groups.

Why here and not a library: llama.cpp chooses K-quant scales and integers together by its own
search (``make_qkx2_quants``) with no Hessian; llm-compressor has GPTQ but writes no GGUF. What is
needed is GPTQ on a fixed K-quant grid, which neither offers.
"""

from __future__ import annotations

import fnmatch

import torch

from medslm.errors import MedslmError

QK_K = 256
ATTN_V = ("*.v_proj", "*.value")
FFN_DOWN = ("*.down_proj", "*.fc2", "*.mlp.c_proj", "*.dense_4h_to_h", "*.w2")
FUSED_QKV = ("*.c_attn", "*.query_key_value", "*.qkv_proj", "*.Wqkv")


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v / ffn_down get Q6_K in Q4_K_M."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_types(model, names: list[str]) -> dict[str, str]:
    """{module: GGUF type} by llama.cpp's Q4_K_M rule. The rule needs only each module's role, input
    width and layer: llama.cpp counts attn_v and ffn_down tensors in layer order, so its counter is
    the layer index, read here from the module's name (stateless, so a block-by-block GPTQ gets the
    same types as a one-shot pass)."""
    from medslm.models.anatomy import blocks_prefix, decoder_layers, linear_weight

    fused = [n for n in names if any(fnmatch.fnmatch(n, p) for p in FUSED_QKV)]
    if fused:
        raise MedslmError(f"target=q4_k_m: {fused[0]} is a fused q/k/v projection, which llama.cpp's Q4_K_M "
                          "stores as Q5_K, a type medslm does not write; use --target gguf (Q4_0/Q4_1/Q8_0)")
    prefix, n_layers = blocks_prefix(model) + ".", len(decoder_layers(model))
    head = model.get_output_embeddings()
    types = {}
    for n in names:
        mod = model.get_submodule(n)
        width = getattr(mod, "in_features", None) or linear_weight(mod).shape[1]
        if mod is head:  # an untied LM head: llama.cpp's output rule
            types[n] = "q6_k" if width % QK_K == 0 else "q8_0"
            continue
        layer = int(n[len(prefix):].split(".")[0]) if n.startswith(prefix) else -1
        role = any(fnmatch.fnmatch(n, p) for p in ATTN_V + FFN_DOWN)
        kind = "q6_k" if role and layer >= 0 and use_more_bits(layer, n_layers) else "q4_k"
        if width % QK_K:
            kind = {"q4_k": "q5_0", "q6_k": "q8_0"}[kind]  # llama.cpp's fallback for rows of other widths
        types[n] = kind
    return types


def table_type(width: int, tied: bool) -> str:
    """medslm's ``embeddings`` value for llama.cpp's Q4_K_M of the token table: tied (it is also the
    output) by the output rule, Q6_K (``q6_k``) or, where the width is not a multiple of 256, Q8_0
    (``int8``); untied by the default type, Q4_K (``q4_k``), or its fallback Q5_0 (``int5``)."""
    if tied:
        return "q6_k" if width % QK_K == 0 else "int8"
    return "q4_k" if width % QK_K == 0 else "int5"


def _pick(base: torch.Tensor, step: torch.Tensor, lo: int, hi: int, err) -> torch.Tensor:
    """Per sub-block, the floor or the ceiling of ``base / step`` (clamped to lo..hi), whichever
    gives the least error ``err(candidate)`` (one value per sub-block)."""
    x = torch.where(step == 0, torch.zeros_like(base), base / torch.where(step == 0, torch.ones_like(step), step))
    fl, ce = x.floor().clamp(lo, hi), x.ceil().clamp(lo, hi)
    return torch.where(err(ce) < err(fl), ce, fl)


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def _lsq_search(x: torch.Tensor, wts: torch.Tensor, candidates, levels: tuple[int, int], offset: bool):
    """Per sub-block (the last dimension of ``x``), the best weighted least-squares (scale, min) over
    candidate integer assignments: each candidate inverse scale rounds ``x`` to integers ``L`` in
    ``levels``; the fit ``x ~ scale * L + min`` (``offset``: with ``min <= 0``, else ``min = 0``) is
    solved in closed form and kept where its weighted error is least. This is the search llama.cpp's
    reference quantizer runs for K-quants (``make_qkx2_quants`` / ``make_qx_quants``), so weights that
    already sit on a K-quant grid find that grid again."""
    lo, hi = levels
    best_err = best_s = best_m = None
    sw = wts.sum(-1)
    for inv, base in candidates:
        L = torch.round(inv[..., None] * (x - base[..., None])).clamp(lo, hi)
        sl, sl2 = (wts * L).sum(-1), (wts * L * L).sum(-1)
        sx, sxl = (wts * x).sum(-1), (wts * x * L).sum(-1)
        if offset:
            det = sw * sl2 - sl * sl
            safe = torch.where(det > 0, det, torch.ones_like(det))
            s = torch.where(det > 0, (sw * sxl - sl * sx) / safe, torch.zeros_like(det))
            m = torch.where(det > 0, (sl2 * sx - sl * sxl) / safe, torch.zeros_like(det))
            pos = m > 0  # the block stores -min >= 0: refit the scale alone
            s = torch.where(pos, sxl / sl2.clamp(min=1e-30), s)
            m = torch.where(pos, torch.zeros_like(m), m)
        else:
            s, m = sxl / sl2.clamp(min=1e-30), torch.zeros_like(sl)
        err = (wts * (s[..., None] * L + m[..., None] - x) ** 2).sum(-1)
        if best_err is None:
            best_err, best_s, best_m = err, s, m
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s, best_m = torch.where(better, s, best_s), torch.where(better, m, best_m)
    return best_s, best_m


def q4_k_grid(w: torch.Tensor):
    """Q4_K's fixed grid for ``w`` (out, in) with in % 256 == 0:
    (d, dmin fp16 (out, in/256); sc, mn uint8 (out, in/32)). Each sub-block's scale and min come from
    the least-squares search (weights ``mean|x| + |x|``, as llama.cpp's), which also clips outliers
    where that rounds the rest better (so ``--clip-search`` adds nothing here)."""
    rows, cols = w.shape
    g = w.float().reshape(rows, cols // 32, 32)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    wts = g.pow(2).mean(-1, keepdim=True).sqrt() + g.abs()
    cands = [((15 + (-1 + 0.1 * k)) / span, lo) for k in range(21)]
    s, m = _lsq_search(g, wts, cands, (0, 15), offset=True)
    scale, mins = s.clamp(min=0).reshape(rows, -1, 8), (-m).reshape(rows, -1, 8)  # w ~ scale * q - min
    d, dmin = _fp16(scale.amax(-1) / 63), _fp16(mins.amax(-1) / 63)
    gs = g.reshape(rows, -1, 8, 32)

    def err_with(sc, mn):
        ss, mm = (d[..., None] * sc), (dmin[..., None] * mn)
        q = grid_round(gs, ss[..., None], -mm[..., None], 4)
        return ((ss[..., None] * q - mm[..., None] - gs) ** 2).sum(-1)

    sc0 = torch.where(d[..., None] == 0, torch.zeros_like(scale), (scale / d[..., None].clamp(min=1e-30)).round().clamp(0, 63))
    mn = _pick(mins, dmin[..., None].expand_as(mins), 0, 63, lambda mn: err_with(sc0, mn))
    sc = _pick(scale, d[..., None].expand_as(scale), 0, 63, lambda sc: err_with(sc, mn))
    return (d.half(), dmin.half(), sc.reshape(rows, -1).to(torch.uint8), mn.reshape(rows, -1).to(torch.uint8))


def q6_k_grid(w: torch.Tensor):
    """Q6_K's fixed grid for ``w`` (out, in) with in % 256 == 0: (d fp16 (out, in/256), sc int8 (out, in/16)).
    Each sub-block's scale from the least-squares search around its extreme (weights ``x^2``)."""
    rows, cols = w.shape
    g = w.float().reshape(rows, cols // 16, 16)
    ext = g.gather(-1, g.abs().argmax(-1, keepdim=True))[..., 0]
    safe = torch.where(ext == 0, torch.ones_like(ext), ext)
    cands = [(-(32 + 0.1 * k) / safe, torch.zeros_like(ext)) for k in range(-9, 10)]
    s, _ = _lsq_search(g, g * g, cands, (-32, 31), offset=False)
    scale = torch.where(ext == 0, torch.zeros_like(s), s).reshape(rows, -1, 16)
    # the signed largest scale maps to -128 (llama.cpp's rule, so a Q6_K file's own d is found again)
    d = _fp16(scale.gather(-1, scale.abs().argmax(-1, keepdim=True))[..., 0] / -128)
    gs = g.reshape(rows, -1, 16, 16)

    def err_with(sc):
        ss = d[..., None] * sc
        return ((ss[..., None] * grid_round(gs, ss[..., None], None, 6) - gs) ** 2).sum(-1)

    sc = _pick(scale, d[..., None].expand_as(scale), -128, 127, err_with)
    return d.half(), sc.reshape(rows, -1).to(torch.int8)


def grid_round(w: torch.Tensor, s: torch.Tensor, m: torch.Tensor | None, bits: int) -> torch.Tensor:
    """Nearest codes of ``w`` on the fixed grid ``s * q + m`` (``m`` None: symmetric, q signed);
    a sub-block with scale 0 gets code 0."""
    safe = torch.where(s == 0, torch.ones_like(s), s)
    if m is None:
        q = torch.round(w / safe).clamp(-2 ** (bits - 1), 2 ** (bits - 1) - 1)
    else:
        q = torch.round((w - m) / safe).clamp(0, 2 ** bits - 1)
    return torch.where(s == 0, torch.zeros_like(q), q)


def kquant_layer(w: torch.Tensor, kind: str, bias: torch.Tensor | None, codes=None):
    """A KQuantLinear of ``w`` on its fixed ``kind`` grid; ``codes(w, scale, offset, bits, group)``
    chooses the integers (default, or where it returns None: round to nearest)."""
    from medslm.models.quantized import KQuantLinear

    rows, cols = w.shape
    m = KQuantLinear(cols, rows, bias is not None, kind)
    if kind == "q4_k":
        m.d, m.dmin, m.sc, m.mn = q4_k_grid(w)
    else:
        m.d, m.sc = q6_k_grid(w)
    s, off = m.grid()
    q = None if codes is None else codes(w, s, off, m.bits, m.group_size)
    if q is None:
        g = w.float().reshape(rows, -1, m.group_size)
        q = grid_round(g, s[..., None], None if off is None else off[..., None], m.bits).reshape(rows, cols)
    m.qweight = q.to(torch.int8)
    if bias is not None:
        m.bias = torch.nn.Parameter(bias.detach().float().clone())
    return m
