"""The method contract, over every registered method and algorithm x every tiny architecture: the
input artifact is untouched (its files hash the same), the output's provenance is the input's
steps plus this one (with its full config), and the output reloads and scores. A method that
does not apply to an architecture refuses with a MedslmError that says what to use instead."""

from __future__ import annotations

import math

import pytest
from helpers import tiny

from medslm.backends.hf import HFBackend
from medslm.errors import MedslmError
from medslm.methods import METHODS, compress
from medslm.models.artifact import ModelArtifact
from medslm.requests import LoglikelihoodRequest

CAL = {"samples": 4, "seq_len": 32}


def config(method: str, algorithm: str, corpus: str, model) -> dict:
    """A small, quick config of each registered method; one not listed runs with its defaults."""
    table = {
        ("quantize", "rtn"): {"bits": 4, "group_size": 16},
        ("quantize", "gptq"): {"bits": 4, "group_size": 16, "calibration": corpus, **CAL},
        ("prune", "magnitude"): {"sparsity": 0.5},
        ("prune", "wanda"): {"sparsity": 0.5, "calibration": corpus, **CAL},
        ("prune", "sparsegpt"): {"pattern": "2:4", "calibration": corpus, **CAL},
        ("prune", "depth"): {"sparsity": 0.5, "calibration": corpus, **CAL},
        ("prune", "width"): {"sparsity": 0.5, "calibration": corpus, **CAL},
        ("prune", "heads"): {"sparsity": 0.5, "calibration": corpus, **CAL},
        ("trim", "trim"): {"corpus": corpus},
        ("distill", "distill"): {"teacher": str(model.path), "corpus": corpus, "steps": 2, "batch_size": 1,
                                 "seq_len": 32, "checkpoint_every": 1},
        ("finetune", "finetune"): {"data": "pubmedqa:fit@1", "tuning": "full", "max_steps": 1, "seq_len": 64,
                                   "batch_size": 1},
        ("pretrain", "pretrain"): {"corpus": "medquad:test", "max_steps": 1, "seq_len": 64, "batch_size": 1,
                                   "allow_overlap": True},
        ("merge", "merge"): {},
    }
    cls = METHODS.algorithms(method)[algorithm]
    # a new algorithm runs with its family default's small config (the fields it has), else its defaults
    small = table.get((method, algorithm)) or table.get((method, METHODS.default(method)), {})
    cfg = {"method": method, **{k: v for k, v in small.items() if k in cls.model_fields}}
    if "algorithm" in cls.model_fields:
        cfg["algorithm"] = algorithm
    return cfg


CASES = [(m, a) for m in METHODS.names() for a in sorted(METHODS.algorithms(m))]


def test_every_registered_method_has_a_case():
    assert len(CASES) >= 13 and {m for m, _ in CASES} >= {"quantize", "prune", "trim", "distill", "finetune",
                                                          "pretrain", "merge"}


def _score(art: ModelArtifact) -> float:
    be = HFBackend(str(art.path))
    (ll, _), = be.loglikelihood([LoglikelihoodRequest("Hypertension is treated with", " diuretics")])
    return ll


@pytest.mark.parametrize("arch", tiny.ARCHS)
@pytest.mark.parametrize("method,algorithm", CASES, ids=[f"{m}-{a}" for m, a in CASES])
def test_method_contract(method, algorithm, arch, tmp_path, mirror):
    corpus = tmp_path / "calib.txt"
    corpus.write_text("\n\n".join(tiny.CORPUS))
    base = tiny.save_artifact(arch, tmp_path / "base")
    src = base
    if method == "merge":  # its input is an adapter
        src = compress(base, {"method": "finetune", "data": "pubmedqa:fit@1", "tuning": "lora", "max_steps": 1,
                              "seq_len": 64, "batch_size": 1}, tmp_path / "adapter")
    before = ModelArtifact.open(src.path)
    cfg = config(method, algorithm, str(corpus), base)
    try:
        out = compress(src, cfg, tmp_path / "out")
    except MedslmError as e:  # not for this architecture: refused up front, with what to use instead
        assert method == "prune" and algorithm in ("width", "heads") and arch in ("gpt2", "biogpt"), e
        assert "use algorithm=" in str(e)
        return
    ModelArtifact.open(src.path).verify()  # the input's files hash as recorded: untouched
    assert ModelArtifact.open(src.path).hash == before.hash
    steps = out.meta.steps
    assert steps[:-1] == before.meta.steps and steps[-1]["name"] == method
    assert steps[-1]["config"]["method"] == method and steps[-1]["input_hash"] == before.hash
    again = ModelArtifact.open(out.path)
    again.verify()
    assert math.isfinite(_score(again))
