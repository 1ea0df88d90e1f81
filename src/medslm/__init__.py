"""medslm: build, compress, measure and serve small language models for healthcare.

Importing ``medslm`` is cheap: nothing heavy (torch, transformers) is imported until used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
