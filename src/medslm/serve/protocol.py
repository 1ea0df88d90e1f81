"""Request bodies of the OpenAI-compatible API, validated strictly.

No silent drops: a field the server does not know is a 400 naming it (``extra="forbid"``), and a
field it knows but cannot honour (``n > 1``, penalties, ``logit_bias``, tools, a JSON
``response_format``, ``suffix``, ``best_of > 1``) is a 400 naming it and saying what is supported.
``max_tokens`` left out means the server's finite default, never "until the context is full".
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Unsupported(ValueError):
    """A known field with a value the server cannot honour; ``param`` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class StreamOptions(_Strict):
    include_usage: bool = False


def _stops(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    return (v,) if isinstance(v, str) else tuple(v)


class _Common(_Strict):
    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=256)
    # vLLM's extension: logprobs name tokens "token_id:N" (exact ids, e.g. for top-k distillation)
    return_tokens_as_token_ids: bool = False
    # medslm extensions
    redact_input: bool = False

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        s = _stops(v)
        if len(s) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not x for x in s):
            raise ValueError("stop sequences must not be empty")
        return v

    def check_supported(self) -> None:
        if self.n != 1:
            raise Unsupported("n", "n must be 1: this server returns one choice per prompt")
        if self.presence_penalty or self.frequency_penalty:
            which = "presence_penalty" if self.presence_penalty else "frequency_penalty"
            raise Unsupported(which, f"{which} is not supported (only 0)")
        if self.logit_bias:
            raise Unsupported("logit_bias", "logit_bias is not supported")
        if self.stream_options is not None and not self.stream:
            raise Unsupported("stream_options", "stream_options is only allowed with stream: true")


Prompt = Union[str, list[str], list[int], list[list[int]]]


class CompletionRequest(_Common):
    prompt: Prompt
    max_tokens: int | None = Field(None, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and any(isinstance(x, list) and not x for x in v):
            raise ValueError("a token-id prompt must not be empty")
        if isinstance(v, list) and any(isinstance(x, int) and x < 0 for x in v):
            raise ValueError("token ids must be non-negative")
        return v

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

    def check_supported(self) -> None:
        super().check_supported()
        if self.suffix:
            raise Unsupported("suffix", "suffix (insertion) is not supported")
        if self.best_of not in (None, 1):
            raise Unsupported("best_of", "best_of must be 1")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(_Strict):
    type: str


class RagOptions(_Strict):
    k: int = Field(4, ge=1, le=20)
    index: str | None = None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    # medslm extension: retrieval-augmented answer with citations
    rag: Union[bool, RagOptions] = False

    @model_validator(mode="after")
    def _roles(self) -> "ChatRequest":
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be from the assistant")
        return self

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def check_supported(self) -> None:
        super().check_supported()
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise Unsupported("max_tokens", "give max_tokens or max_completion_tokens, not both")
        if self.response_format is not None and self.response_format.type != "text":
            raise Unsupported("response_format", f"response_format type {self.response_format.type!r} "
                              "is not supported; only 'text'")
        if self.tools:
            raise Unsupported("tools", "tools / function calling is not supported")
        if self.tool_choice not in (None, "none"):
            raise Unsupported("tool_choice", "tool_choice is not supported")
        if self.top_logprobs and not self.logprobs:
            raise Unsupported("top_logprobs", "top_logprobs needs logprobs: true")


class TokenizeRequest(_Strict):
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[int]

    @field_validator("tokens")
    @classmethod
    def _ids(cls, v: list[int]) -> list[int]:
        if any(t < 0 for t in v):
            raise ValueError("token ids must be non-negative")
        return v


MAX_JSON_DEPTH = 64  # no OpenAI request nests deeper than a few levels
_STRUCT = re.compile(rb'[\\"\[\]{}]')


def json_depth(raw: bytes, stop: int = MAX_JSON_DEPTH) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (outside strings), scanning no further
    than the first point that is deeper than ``stop``: a body nested 100,000 levels deep is refused
    before the JSON parser recurses into it."""
    depth = deepest = 0
    in_str = False
    skip_until = -1
    for m in _STRUCT.finditer(raw):
        i = m.start()
        if i < skip_until:
            continue
        c = raw[i:i + 1]
        if in_str:
            if c == b"\\":
                skip_until = i + 2  # the escaped character
            elif c == b'"':
                in_str = False
        elif c == b'"':
            in_str = True
        elif c in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop:
                    return deepest
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest
