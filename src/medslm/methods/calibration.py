"""Calibration shared by the calibrated methods (GPTQ, Wanda, SparseGPT, structured pruning,
distillation): the texts, their token batches, forward passes that stop early, statistics of each
linear layer's inputs collected with hooks, the calls each decoder block receives (for replaying
blocks one at a time), and the damped inverse-Hessian factor that GPTQ and SparseGPT share.

The math of each method stays in its own module; this one only wires hooks and passes.
"""

from __future__ import annotations

import torch
from torch import nn

from medslm.errors import MedslmError


def calibration_texts(spec: str, n: int, seed: int) -> list[str]:
    """``n`` texts from the named datasets (outside their test and dev splits, or ``NAME:SPLIT``) or
    a text file."""
    import random
    from pathlib import Path

    if spec.endswith(".txt"):
        p = Path(spec)
        if not p.is_file():
            raise MedslmError(f"calibration={spec!r}: no such file")
        texts = [t for t in p.read_text().split("\n\n") if t.strip()]
    else:
        texts = []
        for item in [s.strip() for s in spec.split(",") if s.strip()]:
            if item == "generic":
                texts += generic_texts()
                continue
            for e in item_records(item, spec)[1]:
                t = next((getattr(e, a) for a in ("context", "answer", "text", "question")
                          if isinstance(getattr(e, a, None), str) and getattr(e, a).strip()), "")
                if t:
                    texts.append(t)
    if not texts:
        raise MedslmError(f"calibration={spec!r} gave no text")
    rng = random.Random(seed)
    return rng.sample(texts, min(n, len(texts)))


def item_records(item: str, spec: str, flag: str = "calibration", every_split: bool = False) -> tuple[str, list]:
    """(dataset, records) of one ``NAME[:SPLIT]`` item of a data spec: :func:`training_records`,
    or, for a bare NAME with ``every_split`` (a trim corpus), every record of the dataset. The one
    rule calibration, trimming and the held-out check (:mod:`medslm.held_out`) read data by."""
    from medslm.data import load_dataset

    name, _, split = item.partition(":")
    if every_split and not split:
        return name, list(load_dataset(name))
    return name, training_records(name, split or None, spec, flag)


def training_records(name: str, split: str | None, spec: str, flag: str = "calibration") -> list:
    """The records of ``name`` to calibrate (or trim, or distill) on. No split: every record but the held-out ones (test
    and dev splits). ``NAME:SPLIT``: that split, which may be a carve (``pubmedqa:fit@50``, the part
    that ``--split pubmedqa=dev@50`` does not evaluate on: a mirror without PubMedQA's test split
    evaluates on its train records, so an uncarved calibration can read the texts it is scored on)."""
    from medslm.data import load_dataset
    from medslm.data.splits import carve, parse_carve

    if split is None:
        return [e for e in load_dataset(name) if e.split not in ("test", "dev")]
    c = parse_carve(split)
    if c is None:
        if split in ("test", "dev"):
            raise MedslmError(f"{flag}={spec!r}: {name}:{split} is an evaluation split; use a training "
                              "split or the fit@N carve of the split you evaluate on")
        return list(load_dataset(name, split=split))  # an empty split is refused there, naming the splits
    if c.part == "dev":
        raise MedslmError(f"{flag}={spec!r}: {name}:{split} is the held-out part of a carve; "
                          f"use {name}:{split.replace('dev@', 'fit@', 1)}")
    from medslm.tasks import TASKS, get_task

    if name in TASKS:  # the task's carve, so the parts are exactly the ones its evaluation uses
        return get_task(name).load(split)
    if c.source is None:
        raise MedslmError(f"{flag}={spec!r}: {name} is not a task, so {split} needs its source "
                          f"split, e.g. {name}:train/{split}")
    return carve(list(load_dataset(name, split=c.source)), c, f"{flag} {name}")


def generic_texts(min_chars: int = 1000) -> list[str]:
    """A generic (non-medical) English calibration corpus that exists offline on every machine: the
    prose paragraphs of the Python documentation shipped with CPython (``pydoc_data.topics``; code
    blocks and short lines left out), joined into texts of at least ``min_chars`` characters (as long
    as a PubMedQA abstract). A stand-in for C4/WikiText, which cannot be downloaded here; any .txt
    file (e.g. a C4 sample) can be given instead."""
    import re

    from pydoc_data.topics import topics

    texts, cur = [], ""
    for key in sorted(topics):
        for p in re.split(r"\n\s*\n", topics[key]):
            if p.startswith((" ", "\t")) or len(p) < 200:
                continue
            p = " ".join(p.split())
            if sum(c.isalpha() or c == " " for c in p) < 0.9 * len(p):
                continue
            cur = f"{cur} {p}".strip()
            if len(cur) >= min_chars:
                texts.append(cur)
                cur = ""
    return texts


def calibration_batches(tok, texts: list[str], seq_len: int) -> list[torch.Tensor]:
    return [torch.tensor([tok(t, truncation=True, max_length=seq_len).input_ids]) for t in texts]


def input_norms(model, batches, modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Squared L2 norm of each input feature of each linear module, over all calibration tokens."""
    return _collect(model, batches, modules, lambda x: (x * x).sum(0))


def input_hessians(model, batches, modules: dict[str, nn.Module],
                   stop: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """X^T X of each linear module's inputs over all calibration tokens (SparseGPT's Hessian / 2).
    ``stop``: a module after which the forward pass ends (the rest of the model is not needed)."""
    return _collect(model, batches, modules, lambda x: x.t() @ x, stop)


class _Stop(Exception):
    pass


def _raise_stop(mod, args, out):
    raise _Stop


def _raise_stop_before(mod, args):
    raise _Stop


def forward_until(model, batches, stop: nn.Module | None = None, before: bool = False, **kwargs) -> None:
    """Run ``model`` on each batch without gradients, ending each pass after module ``stop`` (or,
    ``before``, as it is called: its input hooks still run, the module itself does not)."""
    hs = [] if stop is None else [stop.register_forward_pre_hook(_raise_stop_before) if before
                                  else stop.register_forward_hook(_raise_stop)]
    try:
        with torch.no_grad():
            for b in batches:
                try:
                    model(b, **kwargs)
                except _Stop:
                    pass
    finally:
        for h in hs:
            h.remove()


def _collect(model, batches, modules, stat, stop: nn.Module | None = None) -> dict[str, torch.Tensor]:
    return collect_stat(modules, stat, lambda: forward_until(model, batches, stop))


def collect_stat(modules, stat, run) -> dict[str, torch.Tensor]:
    """``stat`` of each module's inputs, summed over every call made while ``run()`` runs."""
    sq = {n: None for n in modules}

    def hook(name):
        def f(mod, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            s = stat(x)
            sq[name] = s if sq[name] is None else sq[name] + s
        return f

    hs = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        run()
    finally:
        for h in hs:
            h.remove()
    return sq


def hessian_factor(w: torch.Tensor, H: torch.Tensor, damp: float, what: str):
    """(float copy of ``w``, upper Cholesky factor of the damped inverse Hessian), as SparseGPT and
    GPTQ both use it. Inputs never seen (zero diagonal) get a unit entry and zero weights."""
    W = w.detach().float().clone()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += torch.eye(H.shape[0]) * damp * torch.diag(H).mean()
    try:
        return W, torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except RuntimeError as e:  # not positive definite even after damping
        raise MedslmError(f"{what}: the calibration Hessian is singular ({e}); raise `damp` or "
                          "`samples`") from None


def block_calls(model: nn.Module, layers: nn.ModuleList, batches: list[torch.Tensor]):
    """For each block, per calibration batch: (positional args, keyword args) it was called with in
    a forward pass of the dense model (no KV cache), hidden states first."""
    calls: list[list] = [[] for _ in layers]

    def pre(i):
        def f(mod, args, kwargs):
            kwargs = dict(kwargs)
            if not args:  # hidden states passed by keyword
                args = (kwargs.pop("hidden_states"),)
            calls[i].append((args, kwargs))
        return f

    hs = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        forward_until(model, batches, layers[-1], use_cache=False)
    finally:
        for h in hs:
            h.remove()
    return calls
