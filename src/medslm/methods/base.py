"""Method configs (pydantic, unknown keys rejected) and the config -> handler dispatch."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medslm.errors import ConfigError, MedslmError


class MethodConfig(BaseModel):
    """Base of every method config: frozen, strict about unknown keys, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: str
    version: ClassVar[int] = 1
    needs_calibration: ClassVar[bool] = False
    # optional stages added after a method shipped: {switch field: its setting fields}. While the
    # switch is off (0, False, None), the stage does not run, so cache_key leaves all of them out:
    # adding a stage (or changing a default of its settings) keeps every cached artifact that does
    # not use it. Defaults of fields outside such a group stay in the key, since changing them
    # changes what a config that omits them computes.
    optional_stages: ClassVar[dict[str, tuple[str, ...]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(), "config_version": self.version}

    def cache_key(self) -> dict[str, Any]:
        """What identifies this config's output: :meth:`to_dict` without the fields of optional
        stages that are switched off."""
        d = self.to_dict()
        for switch, settings in self.optional_stages.items():
            if not d.get(switch):
                for k in (switch, *settings):
                    d.pop(k, None)
        return d


class CalibratedConfig(MethodConfig):
    """Configs of methods that read calibration activations (Wanda, SparseGPT, GPTQ, ...)."""

    calibration: str = Field("pubmedqa,medquad", description='calibration texts: dataset names (comma-separated; each its records outside the test and dev splits, or NAME:SPLIT, e.g. pubmedqa:fit@50 to leave out what --split pubmedqa=dev@50 evaluates), generic (non-medical English) or a .txt file')
    samples: int = Field(64, description='calibration texts')
    seq_len: int = Field(256, description='tokens per calibration text')
    seed: int = Field(1234, description='seed of the calibration sample')
    damp: float = Field(0.01, description="SparseGPT/GPTQ: dampening of the Hessian's diagonal (fraction of its mean)")

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


class MethodRegistry:
    """Method configs registered by name (and algorithm, for the families with several), found by
    importing every module of this package once: a new method is one module whose config class
    carries ``@register_method(...)`` and whose module defines ``apply(art, cfg) -> Transformed``
    (or, for a family member, the hook its family's ``apply`` calls). Unknown names get near
    matches; a duplicate registration is an error."""

    def __init__(self):
        self._algos: dict[str, dict[str, type]] = {}
        self._default: dict[str, str] = {}
        self._found = False

    def register(self, method: str, algorithm: str | None = None, *, default: bool = False):
        def deco(cls):
            algos = self._algos.setdefault(method, {})
            key = algorithm or method
            if key in algos:
                raise ValueError(f"duplicate method {method!r} algorithm {key!r} "
                                 f"({algos[key].__module__} and {cls.__module__})")
            algos[key] = cls
            if default or algorithm is None:
                self._default[method] = key
            return cls
        return deco

    def _discover(self) -> None:
        if self._found:
            return
        import importlib
        import pkgutil

        for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if not m.name.startswith("_") and m.name not in ("base", "calibration"):
                importlib.import_module(f"medslm.methods.{m.name}")
        self._found = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._algos)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def algorithms(self, method: str) -> dict[str, type]:
        """{algorithm: config class} of ``method`` (one entry, named like the method, for most)."""
        self._discover()
        if method not in self._algos:
            raise self.unknown(method)
        return dict(self._algos[method])

    def default(self, method: str) -> str:
        self._discover()
        return self._default[method]

    def unknown(self, name: str) -> MedslmError:
        near = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        return MedslmError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(self.names())}")

    def get(self, name: str) -> type:
        """The config class of a method's default algorithm."""
        return self.algorithms(name)[self.default(name)]

    def config_class(self, d: dict[str, Any], where: str = "") -> type:
        method = d["method"]
        algos = self.algorithms(str(method))
        if len(algos) == 1 and "algorithm" not in next(iter(algos.values())).model_fields:
            return next(iter(algos.values()))
        alg = d.get("algorithm", self.default(method))
        if not isinstance(alg, str) or alg not in algos:
            raise ConfigError(f"{where or method}: algorithm={alg!r}: choose one of {', '.join(sorted(algos))}")
        return algos[alg]


METHODS = MethodRegistry()
register_method = METHODS.register


def handler(cfg: MethodConfig) -> Callable:
    """The function that applies ``cfg``: its module's ``apply``."""
    import importlib

    return importlib.import_module(type(cfg).__module__).apply


def family_fields(method: str) -> dict[str, tuple[type, Any]]:
    """Every field of every algorithm of ``method``: name -> (the config class that first has it,
    its pydantic FieldInfo); for generating CLI flags from the configs."""
    out: dict[str, tuple[type, Any]] = {}
    algos = METHODS.algorithms(method)
    for alg in [METHODS.default(method)] + sorted(a for a in algos if a != METHODS.default(method)):
        cls = algos[alg]
        for name, info in cls.model_fields.items():
            out.setdefault(name, (cls, info))
    return out


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
    cls = METHODS.config_class(d, where)
    d = {k: v for k, v in d.items() if k != "config_version"}
    if "algorithm" in d and "algorithm" not in cls.model_fields:
        raise ConfigError(f"{where or name}: algorithm: unknown key ({name} has no algorithms)")
    others: dict[str, list[str]] = {}
    for alg, c in sorted(METHODS.algorithms(name).items()):
        for f in c.model_fields:
            if f not in cls.model_fields:
                others.setdefault(f, []).append(alg)
    for k in d:
        if k in others:  # a key of sibling algorithms: say which
            algs = [repr(a) for a in others[k]]
            which = algs[0] if len(algs) == 1 else ", ".join(algs[:-1]) + " or " + algs[-1]
            mine = cls.model_fields["algorithm"].default
            raise ConfigError(f"{where or name}: {k}={d[k]!r} applies to algorithm={which}, not {mine!r}")
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
    from medslm.models.artifact import ModelArtifact, new_step, write_artifact
    from medslm.models.loading import resolve

    from medslm.outputs import check_target

    cfg = parse_config(config)
    art = model if isinstance(model, ModelArtifact) else resolve(str(model)).artifact()
    out = check_target(out, flag="--out", inputs=input_dirs(art, cfg), overwrite=overwrite)
    from medslm.energy import Meter

    t = time.perf_counter()
    meter = Meter()
    try:
        with meter.task(cfg.method) as energy:
            res: Transformed = handler(cfg)(art, cfg)
    finally:
        meter.close()
    seconds = round(time.perf_counter() - t, 2)
    if energy:
        res.info["energy"] = energy

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
