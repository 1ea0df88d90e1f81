"""The request types that tasks build and backends answer (a neutral module below both, as
lm-evaluation-harness keeps its ``Instance`` apart from models and tasks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class RollingRequest:
    text: str


@dataclass(frozen=True)
class GenerateRequest:
    context: str
    until: tuple[str, ...] = ()
    max_tokens: int = 256
