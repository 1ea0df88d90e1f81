"""Backends: one interface (base.py), several runtimes (hf, llamacpp, ...)."""

from medslm.backends.base import (BACKENDS, Backend, GenerateRequest, LoglikelihoodRequest,
                                  RollingRequest, get_backend)

__all__ = ["BACKENDS", "Backend", "GenerateRequest", "LoglikelihoodRequest", "RollingRequest",
           "get_backend"]
