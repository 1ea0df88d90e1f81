"""Method configs (pydantic, unknown keys rejected) and the config -> handler dispatch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from medslm.errors import ConfigError, MedslmError
from medslm.registry import Registry


class MethodConfig(BaseModel):
    """Base of every method config: frozen, strict about unknown keys, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: str
    version: ClassVar[int] = 1
    needs_calibration: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(), "config_version": self.version}


class CalibratedConfig(MethodConfig):
    """Configs of methods that read calibration activations (Wanda, SparseGPT, GPTQ, ...)."""

    calibration: str = "pubmedqa,medquad"  # dataset names (comma-separated) or a .txt file
    samples: int = 64
    seq_len: int = 256
    seed: int = 1234
    damp: float = 0.01  # SparseGPT/GPTQ: dampening of the Hessian's diagonal (fraction of its mean)

    @field_validator("damp")
    @classmethod
    def _damp(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"damp={v}: must be between 0 and 1 (exclusive), e.g. 0.01")
        return v

    @field_validator("samples", "seq_len")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be a positive integer")
        return v


METHODS = Registry("method")
METHODS.add("quantize", "medslm.methods.quantize:QuantizeConfig")
METHODS.add("prune", "medslm.methods.prune:PruneConfig")
METHODS.add("trim", "medslm.methods.trim:TrimConfig")
METHODS.add("distill", "medslm.methods.distill:DistillConfig")
METHODS.add("finetune", "medslm.methods.finetune:FinetuneConfig")
METHODS.add("pretrain", "medslm.methods.pretrain:PretrainConfig")
METHODS.add("merge", "medslm.methods.merge:MergeConfig")


def format_validation_error(e: ValidationError, where: str = "") -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        val = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        elif msg.startswith(f"{loc}="):
            parts.append(msg)
        elif isinstance(val, (dict, list)):  # a whole section: its location says enough
            parts.append(f"{loc}: {msg}")
        else:
            parts.append(f"{loc}={val!r}: {msg}")
    return (f"{where}: " if where else "") + "; ".join(parts)


def parse_config(d: dict[str, Any] | MethodConfig, where: str = "") -> MethodConfig:
    """A dict (from YAML, flags) -> the method's validated config. Errors name field and value."""
    if isinstance(d, MethodConfig):
        return d
    if not isinstance(d, dict) or "method" not in d:
        raise ConfigError(f"{where or 'config'}: needs a 'method' key (one of {', '.join(METHODS.names())})")
    name = d["method"]
    if name not in METHODS:
        raise METHODS.unknown(str(name))
    cls = METHODS.get(name)
    d = {k: v for k, v in d.items() if k != "config_version"}
    try:
        return cls(**d)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where or name)) from None


@dataclass
class Transformed:
    """What a handler returns: the new model, its tokenizer, and what to record about the step."""

    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)  # measured facts: sparsity, kept tokens, ...
    extra: dict[str, Any] = field(default_factory=dict)  # artifact-level facts (e.g. quantization)
    write: Callable[[Path], None] | None = None  # custom writer (quantized weights); default save_pretrained


def count_parameters(model) -> int:
    """Parameters, counting the weights that quantized layers hold as integer buffers."""
    return sum(p.numel() for p in model.parameters()) + sum(
        getattr(m, "n_quantized", 0) for m in model.modules())


def load_dense(art, what: str):
    """(model, tokenizer) of a dense float artifact; quantized inputs are refused with the fix."""
    if art.meta.extra.get("quantization"):
        raise MedslmError(f"{what} needs a dense float model, but {art.path} is quantized "
                          f"({art.meta.extra['quantization'].get('scheme')}); apply {what} before "
                          "quantize in the recipe")
    return art.load(dtype="float32")


def input_dirs(art, cfg: MethodConfig) -> list[Path]:
    """Every model directory a step reads: the input, an adapter's base, a teacher or merge partner
    given as a local path (an output must never be, hold or lie inside one of them)."""
    dirs = [art.path]
    base = art.meta.extra.get("adapter", {}).get("base")
    if base:
        dirs.append(Path(base))
    for key in ("teacher", "other", "base"):
        v = getattr(cfg, key, None)
        if isinstance(v, str) and Path(v).expanduser().exists():
            dirs.append(Path(v).expanduser())
    return dirs


def compress(model: str | Any, config: dict[str, Any] | MethodConfig, out: str | Path,
             overwrite: bool = False):
    """Apply one method to a model reference or ModelArtifact, writing a new artifact at ``out``."""
    import importlib

    from medslm.models.artifact import ModelArtifact, new_step, write_artifact
    from medslm.models.loading import resolve

    from medslm.outputs import check_target

    cfg = parse_config(config)
    art = model if isinstance(model, ModelArtifact) else resolve(str(model)).artifact()
    out = check_target(out, flag="--out", inputs=input_dirs(art, cfg), overwrite=overwrite)
    handler = importlib.import_module(f"medslm.methods.{cfg.method}").apply
    t = time.perf_counter()
    res: Transformed = handler(art, cfg)
    seconds = round(time.perf_counter() - t, 2)

    def write(tmp: Path) -> None:
        if res.write is not None:
            res.write(tmp)
        else:
            res.model.save_pretrained(tmp, safe_serialization=True)
        res.tokenizer.save_pretrained(tmp)

    params = count_parameters(res.model)
    step = new_step(cfg.method, cfg.to_dict(), input_hash=art.hash, seconds=seconds, **res.info)
    # an adapter is a property of its own artifact only; training history accumulates
    extra = {k: v for k, v in art.meta.extra.items() if k not in ("gguf_source", "adapter")}
    trained = list(extra.get("trained_on", [])) + list(res.extra.get("trained_on", []))
    allowed = {**extra.get("contamination_allowed", {}), **res.extra.get("contamination_allowed", {})}
    extra.update(res.extra)
    if trained:
        extra["trained_on"] = trained
    if allowed:
        extra["contamination_allowed"] = allowed
    dtype = res.extra.get("quantization", {}).get("scheme") or str(
        next(res.model.parameters()).dtype).replace("torch.", "")
    return write_artifact(write, out, source=art.meta.source, steps=art.meta.steps + [step],
                          parameters=int(params), dtype=dtype, architecture=type(res.model).__name__,
                          extra=extra, overwrite=overwrite)
