"""Chat templates: the model's own, or a built-in one medslm installs when it teaches a base model to chat.

A pretrained base (Gemma 3 270M) has no chat template, but its vocabulary already holds Gemma's turn
markers (``<start_of_turn>``, ``<end_of_turn>``). Fine-tuning with ``chat_template: true`` installs
the family's built-in template in the artifact's tokenizer (saved with it, carried by trimming and
quantization, written into the GGUF as ``tokenizer.chat_template``), and the end-of-turn token
joins the model's end-of-sequence ids, so ``serve``, ``eval --chat-template`` and llama.cpp all see
the turns the model was trained on. The template is rendered with Jinja2 in a sandbox, as
transformers does; the same function renders it for training, evaluation and serving.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

# Gemma's documented turn format: a system message joins the first user turn
GEMMA_TURNS = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] | trim %}"
    "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "{% set text = m['content'] | trim %}"
    "{% if loop.first and sys %}{% set text = sys + '\n\n' + text %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ text }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
BUILTIN = {"gemma": (GEMMA_TURNS, "<end_of_turn>")}  # family -> (template, end-of-turn token)
FAMILY = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma"}


@lru_cache(maxsize=8)
def compile_template(source: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str) -> None:
        raise TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render(template: str, messages: list[dict[str, str]], *, bos_token: str = "", eos_token: str = "",
           add_generation_prompt: bool = True) -> str:
    return compile_template(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                             bos_token=bos_token, eos_token=eos_token)


def user_turn(template: str, prompt: str, bos_token: str = "", eos_token: str = "") -> str:
    """``prompt`` as one user turn followed by the generation prompt, *without* a leading BOS
    (backends add their own BOS, exactly once)."""
    text = render(template, [{"role": "user", "content": prompt.rstrip()}], bos_token=bos_token,
                  eos_token=eos_token)
    return text[len(bos_token):] if bos_token and text.startswith(bos_token) else text


def digest(template: str | None) -> str | None:
    return None if not template else "sha256:" + hashlib.sha256(template.encode()).hexdigest()[:16]


def builtin_for(model_type: str) -> tuple[str, str] | None:
    fam = FAMILY.get(model_type)
    return BUILTIN.get(fam) if fam else None


def install(tokenizer, model, model_type: str) -> dict:
    """Give ``tokenizer`` a chat template if it has none (the family's built-in); add the template's
    end-of-turn token to the model's generation EOS ids. Returns what was done (for provenance)."""
    from medslm.errors import ConfigError

    own = getattr(tokenizer, "chat_template", None)
    end = None
    if not own:
        found = builtin_for(model_type)
        if found is None:
            raise ConfigError(f"chat_template: true, but this {model_type!r} model's tokenizer has no chat "
                              f"template and medslm has no built-in one for it (built-in: "
                              f"{', '.join(sorted(FAMILY))}); add one to tokenizer_config.json")
        tokenizer.chat_template, end = found
    ids = [] if end is None else tokenizer.convert_tokens_to_ids([end])
    if end is not None and (not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id):
        raise ConfigError(f"chat template: the vocabulary lacks its end-of-turn token {end!r}")
    gc = getattr(model, "generation_config", None)
    if ids and gc is not None:
        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
        keep = {int(x) for x in eos + [tokenizer.eos_token_id] if x is not None}
        gc.eos_token_id = sorted(keep | {int(ids[0])})
    return {"template": "builtin:" + FAMILY[model_type] if not own else "model",
            "sha": digest(tokenizer.chat_template), "end_of_turn": end}


def end_of_turn_id(tokenizer) -> int | None:
    """The end-of-turn token a chat answer closes with (the built-in's), else None (use EOS)."""
    for _, end in BUILTIN.values():
        if tokenizer.chat_template and end in tokenizer.chat_template:
            i = tokenizer.convert_tokens_to_ids(end)
            if isinstance(i, int) and i != tokenizer.unk_token_id:
                return i
    return None
