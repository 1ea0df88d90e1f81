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


@functools.lru_cache(maxsize=None)
def spm_tokenizer(turns: bool = False):
    """A Gemma-style vocabulary: byte-fallback BPE over '▁'-escaped text, with special tokens;
    ``turns``: also Gemma's turn markers (as the real vocabulary has them, ids after the others)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")  # "▁word", as SentencePiece
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    marks = ["<start_of_turn>", "<end_of_turn>"] if turns else []
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"] + marks + bytes_)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(  # BOS first, as Gemma's tokenizer adds it
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


# K-quant widths (``wide``): Gemma 3 270M's shape in small. The hidden width (288) is a multiple of 32
# and not of 256, as 640 is, so q/k/v/gate/up fall back to Q5_0/Q8_0 in llama.cpp's Q4_K_M; the
# attention output (2 heads x 128) and the down projection (512) take Q4_K/Q6_K super-blocks.
WIDE = dict(hidden_size=288, intermediate_size=512, head_dim=128)


def config(arch: str, vocab_size: int | None = None, wide: bool | int = False):
    """``wide``: Gemma 3 270M's shape in small (WIDE); an int: that hidden size instead of WIDE's."""
    import transformers as T

    V = vocab_size or len(tokenizer())
    common = dict(vocab_size=V, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    dims = dict(hidden_size=32, intermediate_size=64, head_dim=16)
    if wide:
        if arch not in ("gemma3", "llama", "mistral"):
            raise ValueError(f"wide: {arch}")
        dims = WIDE if isinstance(wide, bool) else dict(WIDE, hidden_size=wide)
    if arch == "gemma3":
        return T.Gemma3TextConfig(hidden_size=dims["hidden_size"], intermediate_size=dims["intermediate_size"],
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                  head_dim=dims["head_dim"],
                                  sliding_window=8, max_position_embeddings=256,
                                  layer_types=["sliding_attention", "full_attention"], **common)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common)
    if arch == "biogpt":
        return T.BioGptConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=256, **common)
    if arch == "llama":
        return T.LlamaConfig(hidden_size=dims["hidden_size"], intermediate_size=dims["intermediate_size"],
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             head_dim=dims["head_dim"],
                             max_position_embeddings=256, **common)
    if arch == "mistral":
        return T.MistralConfig(hidden_size=dims["hidden_size"], intermediate_size=dims["intermediate_size"],
                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                               head_dim=dims["head_dim"], sliding_window=None,
                               max_position_embeddings=256, **common)
    raise ValueError(arch)


def model(arch: str, seed: int = 0, vocab_size: int | None = None, wide: bool | int = False):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(config(arch, vocab_size, wide))
    m.eval()
    return m


def save_artifact(arch: str, out, seed: int = 0, spm: bool = False, turns: bool = False,
                  wide: bool | int = False):
    """A tiny random model saved as an artifact; ``spm``: with the SentencePiece-style vocabulary
    (byte fallback) that llama.cpp's converters read for Gemma and Llama."""
    from medslm.models.artifact import ModelArtifact

    tok = spm_tokenizer(turns) if spm else tokenizer()
    m = model(arch, seed, len(tok) if spm else None, wide)
    if spm:
        m.config.bos_token_id, m.config.eos_token_id, m.config.pad_token_id = (
            tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        if getattr(m.config, "query_pre_attn_scalar", None):  # llama.cpp scales Gemma 3's attention by
            m.config.query_pre_attn_scalar = m.config.head_dim  # 1/sqrt(head_dim), as Gemma 3 270M has it
        if getattr(m.config, "sliding_window", None):  # longer than these tests' texts, as Gemma 3
            m.config.sliding_window = 256  # 270M's 512 is: llama.cpp and transformers differ at the edge
    return ModelArtifact.save(m, tok, out, source=f"tiny-random:{arch}")


def llamacpp_follows_hf(q, out, tok, tol=0.02):
    """llama.cpp's log-likelihoods on the GGUF ``out`` agree with the hf backend on the artifact ``q``
    per token within ``tol`` nats, on five CORPUS sentences."""
    from medslm.backends.hf import HFBackend
    from medslm.backends.llamacpp import LlamaCppBackend
    from medslm.requests import LoglikelihoodRequest

    reqs = [LoglikelihoodRequest(context=" ".join(c.split()[:3]), continuation=" " + " ".join(c.split()[3:]))
            for c in CORPUS[:5]]
    a = LlamaCppBackend(str(out), threads=1, shared_context=False).loglikelihood(reqs)
    b = HFBackend(str(q.path), threads=1, shared_context=False).loglikelihood(reqs)
    # llama.cpp rounds the activations to 8 bits for its quantized matrix products: near, not equal
    worst = max(abs(x[0] - y[0]) / max(1, len(tok(r.continuation).input_ids)) for x, y, r in zip(a, b, reqs))
    assert worst < tol, worst
    print(f"max |llama.cpp - hf| per token: {worst:.4f} nats")
