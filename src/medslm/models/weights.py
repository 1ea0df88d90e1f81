"""From an artifact directory to (model, tokenizer): dtypes, strict loading of Hugging Face
directories and of medslm's quantized format, and merging a LoRA adapter into its base.

Below ``models.artifact`` (whose ``ModelArtifact.load`` calls these) and ``models.loading`` (which
resolves references to artifacts)."""

from __future__ import annotations

import os
from pathlib import Path

from medslm.errors import ArtifactError


def default_dtype(device: str) -> str:
    """fp32 on CPU (bf16 runs 2-5x slower on CPUs without native bf16), bf16 on CUDA."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ArtifactError(f"dtype {name!r} not supported; choose one of fp32, bf16, fp16")
    return table[name]


def _load_quantized(path: Path, q: dict, dtype: str):
    """Build the architecture without touching memory, swap in QuantLinear layers, load the state."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from medslm.models.quantized import empty_quantized_

    cfg = AutoConfig.from_pretrained(path)
    with no_init_weights():  # weights stay unallocated pages until the state fills them
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype(dtype))
    empty_quantized_(model, q)
    # assign: the loaded tensors become the weights (no second copy; peak memory = the model's)
    res = model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False, assign=True)
    tied: set[str] = set()
    if q.get("embeddings", "keep") == "keep":  # a quantized embedding and its head share one state
        model.tie_weights()
        head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
        tied = {f"{head}.weight"} if getattr(cfg, "tie_word_embeddings", False) else set()
    info = {"missing_keys": set(res.missing_keys) - tied, "unexpected_keys": set(res.unexpected_keys),
            "error_msgs": []}
    return model, info


def load_hf_dir(path: str | os.PathLike, dtype: str | None = None, device: str = "cpu",
                quantization: dict | None = None):
    """Load (model, tokenizer) from a model directory. Missing or unexpected weights are an error."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safetensors import SafetensorError

    path = Path(path)
    dtype = dtype or default_dtype(device)
    transformers.utils.logging.disable_progress_bar()
    try:
        if quantization:
            model, info = _load_quantized(path, quantization, dtype)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype(dtype), output_loading_info=True
            )
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise ArtifactError(f"{path}: cannot load the model ({type(e).__name__}: {e}); the directory is "
                            "damaged or incomplete: rebuild it, or check its files with "
                            f"`medslm models info {path} --verify`") from e
    problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys",
                                                               "mismatched_keys") and v}
    if problems or info.get("error_msgs"):
        detail = "; ".join(f"{k}: {', '.join(map(str, v[:20]))}" + (" ..." if len(v) > 20 else "")
                           for k, v in problems.items())
        raise ArtifactError(f"{path}: weights do not match the model config ({detail}). "
                            "The directory is incomplete or from another architecture")
    model.eval()
    if device != "cpu":
        model.to(device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: cannot load the tokenizer: {e}") from e
    return model, tok


def merge_adapter(base_model, adapter_dir: Path):
    """``base_model`` with the LoRA adapter in ``adapter_dir`` merged in (merged LoRA weights give
    the same logits as the unmerged adapter and run at the base's speed)."""
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ArtifactError(f"{adapter_dir} is a LoRA adapter; loading it needs peft: "
                            "pip install 'medslm[train]'") from e
    model = PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload()
    model.eval()
    return model


def weights_hash(model) -> str:
    """Hash of every weight byte: two in-memory models share request-cache entries only if equal."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "weights:" + h.hexdigest()[:16]
