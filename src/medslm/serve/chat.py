"""Chat messages to prompt token ids, with exactly one BOS.

A model's own chat template (``tokenizer_config.json`` or the GGUF's ``tokenizer.chat_template``)
is rendered with Jinja2 in a sandbox, as transformers does. Base models without one (Gemma 3 270M
is such a model) get a declared fallback, ``FALLBACK_NAME``: plain "User:" / "Assistant:" turns,
which a base model continues sensibly, with ``"\\nUser:"`` added as a stop string so the model does
not write the next user turn itself.

BOS: templates that print ``bos_token`` themselves are tokenized without adding another; the rest
get the model's usual BOS. :func:`render` returns the ids, never a string, so a double BOS from
template + tokenizer cannot slip through (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from medslm.models.chat_template import compile_template
from medslm.serve.runtime import Runtime

FALLBACK_NAME = "medslm-plain-v1"
FALLBACK_STOP = ("\nUser:",)


@dataclass
class Rendered:
    ids: list[int]
    template: str          # "model" or FALLBACK_NAME
    stop: tuple[str, ...]  # stop strings the template needs


def fallback_text(messages: list[dict[str, str]]) -> str:
    parts = []
    for m in messages:
        if m["role"] in ("system", "developer"):
            parts.append(m["content"].strip() + "\n\n")
        elif m["role"] == "user":
            parts.append(f"User: {m['content'].strip()}\n")
        else:
            parts.append(f"Assistant: {m['content'].strip()}\n")
    return "".join(parts) + "Assistant:"


def render(rt: Runtime, messages: list[dict[str, str]]) -> Rendered:
    if rt.chat_template:
        try:
            text = compile_template(rt.chat_template).render(messages=messages, add_generation_prompt=True,
                                                     **rt.special_tokens)
        except Exception as e:  # noqa: BLE001 - a template's own error is the user's message
            raise ValueError(f"the model's chat template rejected these messages: {e}") from None
        has_bos = bool(rt.bos_text) and text.startswith(rt.bos_text)
        ids = rt.tokenize(text, bos=not has_bos and rt.add_bos, special=True)
        return Rendered(ids, "model", ())
    # template-less base model: plain text, special-token strings in user text stay plain text
    return Rendered(rt.tokenize(fallback_text(messages), bos=rt.add_bos, special=False), FALLBACK_NAME,
                    FALLBACK_STOP)
