"""Tiny random models of every architecture the presets use, and a tiny tokenizer, for tests."""

from __future__ import annotations

import functools

CORPUS = [
    "Question: Which vitamin deficiency causes scurvy? Answer: Vitamin C.",
    "Abstract: Patients with diabetes mellitus were randomized to metformin or placebo.",
    "The patient presented with chest pain, dyspnea and elevated troponin levels.",
    "Choices: A. aspirin B. heparin C. warfarin D. clopidogrel. Answer: yes no maybe",
    "Hypertension is treated with ACE inhibitors, beta blockers and diuretics.",
    "The following are multiple choice questions (with answers) about anatomy.",
    "In-hospital mortality was higher in sepsis admissions to the intensive care unit.",
] * 3

ARCHS = ["gemma3", "gpt2", "biogpt", "llama", "mistral"]


@functools.lru_cache(maxsize=None)
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def config(arch: str):
    import transformers as T

    V = len(tokenizer())
    common = dict(vocab_size=V, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gemma3":
        return T.Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  sliding_window=8, max_position_embeddings=256,
                                  layer_types=["sliding_attention", "full_attention"], **common)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common)
    if arch == "biogpt":
        return T.BioGptConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=256, **common)
    if arch == "llama":
        return T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=256, **common)
    if arch == "mistral":
        return T.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1, sliding_window=None,
                               max_position_embeddings=256, **common)
    raise ValueError(arch)


def model(arch: str, seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(config(arch))
    m.eval()
    return m


def save_artifact(arch: str, out, seed: int = 0):
    from medslm.models.artifact import ModelArtifact

    return ModelArtifact.save(model(arch, seed), tokenizer(), out, source=f"tiny-random:{arch}")
