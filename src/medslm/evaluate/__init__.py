"""Evaluation: the runner (batching, request cache, resume), metrics with CIs, efficiency."""

from medslm.evaluate.runner import evaluate

__all__ = ["evaluate"]
