"""A recipe's schema: the model, its evaluation (:class:`EvalSpec`) and its variants (chains of
method steps, and where each ships: :class:`Variant`), validated by pydantic (unknown keys
rejected); :mod:`medslm.recipe_load` reads one from YAML with errors naming the line and key, and
:mod:`medslm.pipeline` runs it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medslm.errors import ConfigError

RECIPE_VERSION = 1


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(min_length=1)
    limit: int | dict[str, int] | None = None
    # a split for every task, or {task: split}; fit@N/dev@N carve a held-out part (see data.splits)
    split: str | dict[str, str] | None = None
    seed: int = 1234
    fewshot: int = 0
    batch_size: int = 8
    decode_bench: bool = True
    chat_template: Literal["off", "auto", "on"] = "off"  # auto: chat-tuned variants are asked in turns

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        from medslm.tasks import TASKS

        for t in v:
            if t not in TASKS:
                raise ValueError(str(TASKS.unknown(t)))
        return v

    @field_validator("limit")
    @classmethod
    def _limit(cls, v):
        vals = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(n < 1 for n in vals):
            raise ValueError(f"limit={v!r}: a limit is a positive number of examples (leave it out for "
                             "the whole split)")
        return v

    @field_validator("fewshot")
    @classmethod
    def _fewshot(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"fewshot={v}: must be 0 or more")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"batch_size={v}: must be 1 or more")
        return v

    @model_validator(mode="after")
    def _named_tasks(self):
        for key in ("limit", "split"):
            d = getattr(self, key)
            if isinstance(d, dict) and set(d) - set(self.tasks):
                raise ValueError(f"{key} names {sorted(set(d) - set(self.tasks))}, which are not in tasks "
                                 f"{self.tasks}")
        return self

    def limit_for(self, task: str) -> int | None:
        return self.limit.get(task) if isinstance(self.limit, dict) else self.limit

    def split_for(self, task: str) -> str | None:
        return self.split.get(task) if isinstance(self.split, dict) else self.split


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
    steps: list[dict[str, Any]] = Field(default_factory=list)
    # llamacpp: evaluate on llama.cpp, where it ships. Without steps, the model's own GGUF; with
    # steps, the final artifact exported to GGUF: a dense one as type `gguf` (default q4_k_m, llama.cpp
    # quantizes), one medslm quantized as blocks of its own integers (q4_0 / q4_1 / q8_0 by its grid)
    backend: str = "hf"  # a registered backend (medslm.backends.base.BACKENDS)
    gguf: str | None = None
    # where llama.cpp quantizes a dense model: per-tensor types (regex on the GGUF tensor name -> type,
    # llama-quantize's --tensor-type) and its importance matrix on these calibration texts
    gguf_types: dict[str, str] | None = None
    gguf_imatrix: str | None = None  # calibration texts, or a .gguf / .dat file llama-imatrix wrote
    gguf_imatrix_samples: int | None = None  # default 64
    # hf: the dtype the model is evaluated in (default fp32 on CPU); e.g. the base in bf16
    dtype: Literal["fp32", "bf16", "fp16"] | None = None
    # what the variant's Ray task reserves (`medslm run --ray`); its evaluation uses `cpus` threads
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from medslm.backends.base import BACKENDS

        if v not in BACKENDS:
            raise ValueError(str(BACKENDS.unknown(v)))
        return v

    @model_validator(mode="after")
    def _gguf(self):
        from medslm.export.gguf import TYPES

        if self.gguf is not None:
            if self.backend != "llamacpp":
                raise ValueError("gguf: a GGUF type only applies with backend: llamacpp")
            if self.gguf not in TYPES:
                raise ValueError(f"gguf={self.gguf!r}: choose one of {', '.join(TYPES)}")
        if self.dtype is not None and self.backend != "hf":
            raise ValueError("dtype: applies to the hf backend; a GGUF's type is `gguf:`")
        quantized = any(s.get("method") == "quantize" for s in self.steps)
        from medslm.export.llama_quantize import NEEDS_IMATRIX, RECIPE_FLAGS, check_llama_options, parse_tensor_types

        options = self.gguf_types or self.gguf_imatrix or self.gguf_imatrix_samples is not None
        if options or self.gguf in NEEDS_IMATRIX:
            if self.backend != "llamacpp":
                raise ValueError("gguf_types / gguf_imatrix: llama.cpp's quantizer options apply with backend: llamacpp")
            try:
                types = parse_tensor_types(self.gguf_types or {}, flag=RECIPE_FLAGS[0])
                check_llama_options(self.gguf or "q4_k_m", types, self.gguf_imatrix, self.gguf_imatrix_samples,
                                    quantized=quantized, flags=RECIPE_FLAGS)
            except ConfigError as e:  # -> the validation error that names the variant
                raise ValueError(str(e)) from e
            self.gguf_types = types or None
        if self.backend == "llamacpp" and quantized:
            from medslm.export.gguf_blocks import default_type

            last = next(s for s in reversed(self.steps) if s.get("method") == "quantize")
            own = default_type({"bits": last.get("bits", 8), "symmetric": last.get("symmetric", True),
                                "target": last.get("target")})
            if self.gguf is not None and self.gguf != own:
                raise ValueError(f"gguf={self.gguf!r}: after a quantize step the GGUF holds medslm's own "
                                 f"integers, as {own} for this step's grid; drop gguf (its grid decides) or "
                                 "the quantize step (llama.cpp then quantizes)")
            if last.get("group_size", 32) != 32:
                raise ValueError("backend llamacpp after a quantize step: GGUF blocks hold 32 weights; give "
                                 "the step target: gguf (or group_size: 32)")
        return self


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    model: str
    eval: EvalSpec
    variants: list[Variant] = Field(min_length=1)
    output: str | None = None
    serve: str | None = None  # a variant `medslm serve` runs by default once the recipe has built it

    @model_validator(mode="after")
    def _serve(self):
        names = [v.name for v in self.variants]
        if self.serve is not None and self.serve not in names:
            raise ValueError(f"serve={self.serve!r} names no variant; choose one of {', '.join(names)}")
        return self

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != RECIPE_VERSION:
            raise ValueError(f"recipe version {v} is not supported (this medslm reads version {RECIPE_VERSION})")
        return v


def select_variants(recipe: Recipe, names: list[str] | None, flag: str = "--variants") -> list[Variant]:
    """The recipe's variants named in ``names`` (all of them for None), in the recipe's order; an
    unknown or repeated name is an error naming ``flag`` and the recipe's variants."""
    if names is None:
        return list(recipe.variants)
    have = [v.name for v in recipe.variants]
    unknown = [n for n in names if n not in have]
    if unknown or not names or len(set(names)) != len(names):
        what = (f"names no variant of recipe {recipe.name}: {', '.join(unknown)}" if unknown
                else "lists a variant twice" if names else "is empty")
        raise ConfigError(f"{flag} {','.join(names)} {what}; choose from {', '.join(have)}")
    return [v for v in recipe.variants if v.name in names]


__all__ = ["RECIPE_VERSION", "EvalSpec", "Recipe", "Variant", "select_variants"]
