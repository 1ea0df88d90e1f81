"""Methods: each a validated config plus one handler, ModelArtifact -> new ModelArtifact.

    >>> from medslm.methods import compress
    >>> compress("gemma3-270m", {"method": "quantize", "bits": 4}, out="runs/q4")

The input artifact is never modified; the new one records the step (name, full config, medslm
version) after the input's steps, so ``medslm models info`` shows the whole chain.
"""

from medslm.methods.base import METHODS, MethodConfig, compress, parse_config

__all__ = ["METHODS", "MethodConfig", "compress", "parse_config"]
