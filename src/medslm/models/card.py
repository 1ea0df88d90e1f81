"""Model cards in the Hugging Face Hub's format, built from what medslm recorded.

A card is ``README.md``: YAML front matter (``license``, ``base_model``, ``base_model_relation``,
``datasets``, ``tags``, ``language``, ``pipeline_tag``, ``library_name`` and a ``model-index`` built from
the result files on this model) written by ``huggingface_hub``'s :class:`ModelCardData`, then the
chain of steps with their configs, the evaluation table with 95% CIs and hardware, the efficiency
figures, the contamination guard's outcome, the base model's terms, and the statement that this
is not a medical device. Every fact comes from ``medslm.json`` (the provenance chain) and the
result JSONs whose model hash is this artifact's (or this GGUF's), so a card is rebuilt, never
edited: ``medslm card DIR [--results DIR]`` (:mod:`medslm.share.card`). The card is not part of an
artifact's content hash. Built from plain provenance dicts, so every writer (artifacts, GGUF exports)
can call it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD = "README.md"
NOT_A_DEVICE = ("**Not a medical device.** This model is a research artifact. It has not been cleared or "
                "approved by any regulator, it makes mistakes, and it must not be used to diagnose, treat or "
                "advise patients without a qualified clinician's review.")
HUB_LICENSE = {"Gemma": "gemma", "Apache": "apache-2.0", "MIT": "mit", "BigScience BLOOM RAIL": "bigscience-bloom-rail-1.0",
               "Llama 2": "llama2"}
TRAINING = ("finetune", "pretrain", "distill")


def _preset(source: str):
    from medslm.models.presets import PRESETS

    name = source.split(":", 1)[1].split(" ", 1)[0] if source.startswith("preset:") else None
    return PRESETS.get(name) if name else None


def relation(steps: list[dict], adapter: bool) -> str | None:
    """The Hub's base_model_relation of the last model to its base."""
    names = [s["name"] for s in steps]
    if adapter:
        return "adapter"
    if any(n in TRAINING for n in names):
        return "finetune"
    if "merge" in names:
        return "merge"
    if any(n in ("quantize", "export_gguf") for n in names):
        return "quantized"
    return None


def datasets_used(steps: list[dict]) -> list[str]:
    """Dataset names any step read (training data, corpora, calibration), in order."""
    out: list[str] = []
    for s in steps:
        c = s.get("config", {})
        for key in ("data", "corpus", "calibration"):
            v = c.get(key)
            if isinstance(v, str) and not v.endswith(".txt"):
                for item in v.split(","):
                    name = item.strip().split(":", 1)[0]
                    if name and name not in out and name != "generic":
                        out.append(name)
    return out


def hub_datasets(names: list[str]) -> list[str]:
    from medslm.data import DATASETS

    out = []
    for n in names:
        try:
            spec = DATASETS.get(n)
        except Exception:  # noqa: BLE001 - a name from an older medslm: listed in the text only
            continue
        if spec.hf_repo:
            out.append(spec.hf_repo)
    return out


def matching_results(results: Path | None, model_hash: str | None) -> list[dict]:
    if results is None or not model_hash or not Path(results).is_dir():
        return []
    out = []
    for f in sorted(Path(results).glob("*.json")):
        try:
            r = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(r, dict) and r.get("model", {}).get("hash") == model_hash and "metrics" in r:
            out.append(r)
    return out


def eval_results(results: list[dict], model_name: str):
    from huggingface_hub import EvalResult

    out = []
    for r in results:
        t, prim = r["task"], r["task"]["primary"]
        out.append(EvalResult(task_type="text-generation", task_name=t["name"], dataset_type=t["dataset"],
                              dataset_name=t["name"], dataset_split=str(t.get("split")), metric_type=prim,
                              metric_name=prim, metric_value=round(float(r["metrics"][prim]["value"]), 6),
                              verified=False))
    return out


def _table(results: list[dict]) -> list[str]:
    if not results:
        return ["No evaluation results are recorded for this model yet (`medslm eval --model ... --output DIR`, "
                "then `medslm card DIR --results DIR`)."]
    lines = ["| task | split | n | metric | value | 95% CI | decode tok/s | hardware |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, prim = r["task"], r["task"]["primary"]
        m, e = r["metrics"][prim], r["efficiency"]
        ci = m.get("ci95")
        lines.append(f"| {t['name']} | {t.get('split')} | {t.get('n')} | {prim} | {m['value']:.4f} | "
                     f"{f'[{ci[0]:.4f}, {ci[1]:.4f}]' if ci else ''} | {e.get('decode_tok_s') or ''} | "
                     f"{e.get('cpu') or e.get('gpu') or ''}, {e.get('threads') or '?'} threads |")
    return lines


def build_card(meta: dict[str, Any], *, name: str, model_hash: str | None, results: list[dict],
               gguf: dict | None = None):
    """The card (a ``huggingface_hub.ModelCard``) of a model whose provenance is ``meta``."""
    from huggingface_hub import ModelCard, ModelCardData

    steps = meta.get("steps", [])
    preset = _preset(meta.get("source", ""))
    extra = meta.get("extra", {})
    lic = next((v for k, v in HUB_LICENSE.items() if preset and preset.license.startswith(k)), "other")
    used = datasets_used(steps)
    tags = ["medslm", "medical", "healthcare", "small-language-model"] + [s["name"] for s in steps if s["name"] not in ("convert_gguf",)]
    if gguf:
        tags.append("gguf")
    if extra.get("chat_template"):
        tags.append("conversational")
    data = ModelCardData(
        license=lic, base_model=preset.hub_id if preset and preset.hub_id else None,
        datasets=hub_datasets(used) or None, tags=sorted(set(tags)), language=["en"], pipeline_tag="text-generation",
        library_name="gguf" if gguf else "transformers", model_name=name,
        eval_results=eval_results(results, name) or None,
    )
    rel = relation(steps, bool(extra.get("adapter")) and not gguf)
    if rel and data.base_model:
        data.base_model_relation = rel
    body = [f"# {name}", "", f"Built with medslm from `{meta.get('source', '?')}`"
            f"{' and exported to GGUF for llama.cpp' if gguf else ''}.", ""]
    body += ["## How it was made", ""]
    for i, s in enumerate(steps, 1):
        body.append(f"{i}. `{s['name']}` ({s.get('time', '')}, medslm {s.get('medslm_version', '?')}): "
                    f"`{json.dumps(s.get('config', {}), sort_keys=True)}`")
    if gguf:
        body.append(f"{len(steps) + 1}. GGUF `{gguf.get('type')}`: {gguf.get('file')} "
                    f"({gguf.get('bytes', 0):,} bytes, sha256 {str(gguf.get('sha256', ''))[:16]}...)")
    body += ["", f"Parameters: {meta.get('parameters', 0):,}; dtype {meta.get('dtype')}; artifact hash "
             f"`{meta.get('content_hash')}`; packages: {', '.join(f'{k} {v}' for k, v in meta.get('packages', {}).items())}.", ""]
    body += ["## Training data and contamination check", ""]
    guard = [s.get("contamination") for s in steps if s.get("contamination")]
    if used:
        body.append("Data read by the steps: " + ", ".join(f"`{d}`" for d in used) + ".")
    if guard:
        for g in guard:
            checked = ", ".join(f"{k} ({n})" for k, n in g.get("checked", {}).items())
            outcome = ("overlap ALLOWED (trained on evaluation data): " + json.dumps(g.get("overlap")) if g.get("allowed")
                       else f"{g.get('dropped')} overlapping training example(s) left out" if g.get("dropped")
                       else "no overlap")
            body.append(f"- contamination guard (near-duplicate threshold {g.get('threshold')}): checked against "
                        f"{checked or 'nothing'}; {outcome}")
    elif any(s["name"] in TRAINING for s in steps):
        body.append("- contamination guard: no outcome recorded")
    else:
        body.append("- no training step: nothing to check")
    body += ["", "## Evaluation", ""] + _table(results)
    body += ["", "## Intended use and limitations", "",
             "A small model for research and for private, local use on medical text by people who can judge its "
             "output. It is not instruction-tuned unless a step above says `chat_template`; it hallucinates; its "
             "accuracy on the benchmarks above is the only evidence of its quality.", "", NOT_A_DEVICE, ""]
    if preset and preset.license.startswith("Gemma"):
        body += ["## Terms", "", "This model is a derivative of Gemma and is subject to the Gemma Terms of Use "
                 "(https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use Policy "
                 "(https://ai.google.dev/gemma/prohibited_use_policy). Gemma is provided under and subject to "
                 "the Gemma Terms of Use found at ai.google.dev/gemma/terms.", ""]
    elif preset:
        body += ["## Terms", "", f"The base model's license applies: {preset.license}.", ""]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}\n", body="\n".join(body))


def gguf_card_path(gguf: str | Path) -> Path:
    p = Path(gguf)
    return p.with_name(p.name + ".README.md")


def write_gguf_card(gguf: str | Path, source_meta: dict, results: str | Path | None = None,
                    qtype: str | None = None) -> Path:
    """``<file>.gguf.README.md`` beside a GGUF export (``medslm push`` uploads it as README.md)."""
    from medslm.outputs import replace_file
    from medslm.system import sha256_file

    p = Path(gguf)
    digest = "sha256:" + sha256_file(p)
    card = build_card(source_meta, name=p.stem, model_hash=digest,
                      results=matching_results(Path(results) if results else None, digest),
                      gguf={"type": qtype, "file": p.name, "bytes": p.stat().st_size, "sha256": digest.split(":")[1]})
    return replace_file(gguf_card_path(p), str(card))
