"""Run a recipe: a model, variants (chains of method steps), evaluations, one report.

A recipe (YAML, versioned, unknown keys rejected, every error naming its line and key: see
:mod:`medslm.recipe` and :mod:`medslm.recipe_load`)::

    version: 1
    name: quickstart
    model: gemma3-270m
    eval:
      tasks: [pubmedqa, medmcqa, medppl]
      limit: {pubmedqa: 30, medmcqa: 60, medppl: 10}
    variants:
      - name: base
      - name: int4
        steps: [{method: quantize, bits: 4}]
      - name: trim+int4
        steps: [{method: trim}, {method: quantize, bits: 4}]

Each step's output artifact is cached by (input artifact hash, step config) under
``$MEDSLM_CACHE/artifacts/``: shared prefixes are built once, and a rerun after an interruption
or an edit redoes only what changed. Each (variant, task) evaluation runs in its own process (so
peak memory is the model's own) and writes ``results/<variant>__<task>.json``; a finished result
whose artifact hash and task settings match is reused. Requests are cached too, so an evaluation
killed midway resumes. A failed step stops the run with a clear message; finished results stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from medslm import settings
from medslm.errors import MedslmError
from medslm.recipe import EvalSpec, Recipe, Variant, select_variants

# --------------------------------------------------------------------------------- running
def step_key(input_hash: str, step: dict[str, Any]) -> str:
    from medslm.methods import parse_config

    cfg = parse_config(step).cache_key()
    return hashlib.sha256(json.dumps([input_hash, cfg], sort_keys=True).encode()).hexdigest()[:20]


def build_variant(base, variant: Variant, log, build: bool = True) -> Any:
    """The variant's final artifact, building (or reusing) each step's output; ``build=False``:
    only from the cache (None where a step's output is not there)."""
    from filelock import FileLock

    from medslm.methods import compress
    from medslm.models.artifact import ModelArtifact

    art = base
    for step in variant.steps:
        if step.get("method") == "distill" and step.get("teacher", "base") == "base":
            step = {**step, "teacher": str(base.path)}  # "base": the recipe's model
        key = step_key(art.hash, step)
        out = settings.cache_dir() / "artifacts" / f"{step['method']}-{key}"
        if not build:
            if not (out / "medslm.json").is_file():
                return None
            art = ModelArtifact.open(out)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        # one builder per step: variants running side by side (--ray) that share a step wait for it
        with FileLock(str(out) + ".lock"):
            if (out / "medslm.json").is_file():
                art = ModelArtifact.open(out)
                log(f"  {variant.name}: {step['method']} cached ({out.name})")
                continue
            t = time.perf_counter()
            log(f"  {variant.name}: {step['method']} {json.dumps({k: v for k, v in step.items() if k != 'method'})} ...")
            try:
                art = compress(art, step, out)
            except MedslmError as e:
                raise MedslmError(f"variant {variant.name!r}, step {step['method']}: {e}") from e
        log(f"  {variant.name}: {step['method']} done in {time.perf_counter() - t:.0f}s "
            f"({art.meta.bytes / 2**20:.0f} MiB)")
    return art


TORCH_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _result_ok(f: Path, art_hash: str, task: str, spec: EvalSpec, dtype: str | None = None) -> bool:
    if not f.is_file():
        return False
    try:
        r = json.loads(f.read_text())
    except json.JSONDecodeError:
        return False
    t = r.get("task", {})
    want_split = spec.split_for(task)
    if want_split and t.get("requested_split") != want_split:
        return False
    if dtype and r.get("model", {}).get("dtype") != TORCH_DTYPE[dtype]:
        return False
    return (r.get("model", {}).get("hash") == art_hash and t.get("limit") == spec.limit_for(task)
            and t.get("seed") == spec.seed and t.get("fewshot") == spec.fewshot
            and t.get("chat_mode", "off") == spec.chat_template)


def evaluate_variant(art, label: str, tasks: list[str], spec: EvalSpec, results: Path,
                     threads: int | None, log, backend: str = "hf", model: str | None = None,
                     dtype: str | None = None) -> None:
    """One process per variant: peak memory is this model's own, the model loads once, decode
    speed is measured once."""
    from medslm.evaluate.runner import result_filename

    cmd = [sys.executable, "-m", "medslm", "eval", "--model", model or str(art.path), "--backend", backend,
           "--tasks", ",".join(tasks),
           "--seed", str(spec.seed), "--fewshot", str(spec.fewshot), "--batch-size", str(spec.batch_size),
           "--output", str(results), "--label", label, "--overwrite"]  # results/ is the run's own
    limits = {t: spec.limit_for(t) for t in tasks if spec.limit_for(t)}
    if limits:
        cmd += ["--limit", ",".join(f"{t}={n}" for t, n in limits.items())]
    splits = {t: spec.split_for(t) for t in tasks if spec.split_for(t)}
    if splits:
        cmd += ["--split", ",".join(f"{t}={s}" for t, s in splits.items())]
    if not spec.decode_bench:
        cmd.append("--no-decode-bench")
    if spec.chat_template != "off":
        cmd += ["--chat-template", spec.chat_template]
    if not threads:  # a recipe's steps run one after another: every core is the evaluation's, although
        from medslm.system import usable_cores  # the load average still shows the step before it

        threads = usable_cores()
    cmd += ["--threads", str(threads)]
    if dtype:
        cmd += ["--dtype", dtype]
    t = time.perf_counter()
    from medslm.system import die_with_parent

    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True,
                       preexec_fn=die_with_parent if sys.platform == "linux" else None)
    if p.returncode != 0:
        raise MedslmError(f"evaluation of variant {label!r} on {', '.join(tasks)} failed (exit "
                          f"{p.returncode}); finished results are kept in {results}; rerun to resume")
    for task in tasks:
        r = json.loads((results / result_filename(label, task)).read_text())
        prim = r["task"]["primary"]
        log(f"  {label}: {task} {prim}={r['metrics'][prim]['value']:.4f}")
    log(f"  {label}: evaluated {', '.join(tasks)} in {time.perf_counter() - t:.0f}s")


def run_output(recipe: Recipe, output: str | os.PathLike | None = None) -> Path:
    """The run's folder, checked before any work: absent, empty, or a folder a medslm run wrote
    (its recipe.json and results/), so a rerun resumes; never a folder of the user's own files."""
    from medslm.outputs import OutputError, check_writable, written_by_medslm

    out = Path(output or recipe.output or Path("runs") / recipe.name)
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"--output {out} is an existing file, not a folder; choose another --output")
        if written_by_medslm(out) not in ("run", "empty"):
            raise OutputError(f"--output {out} already holds files that a medslm run did not write (no "
                              "recipe.json and results/); choose another --output (a new or empty folder, "
                              "or an earlier run's folder to resume it)")
    check_writable(out / "recipe.json", "--output")
    return out


def variant_model(recipe: Recipe, v: Variant, base, log, build: bool = True) -> tuple | None:
    """(artifact, the model hash its results must carry, the GGUF it ships as or None, that file
    found or None); ``build=False``: only from the cache, None where something is not there."""
    art = build_variant(base, v, log, build=build)
    if art is None:
        return None
    want_hash = art.hash
    gguf_model = found = None
    if v.backend == "llamacpp":
        from medslm.backends.llamacpp import find_gguf
        from medslm.system import sha256_file

        if v.steps or v.gguf or v.gguf_types or v.gguf_imatrix:
            from medslm.export.gguf import cached_export

            exported = cached_export(art, v.gguf, v.name, log, v.gguf_types, v.gguf_imatrix,
                                     v.gguf_imatrix_samples, lookup_only=not build)
            if exported is None:
                return None
            gguf_model = str(exported)
        else:
            gguf_model = recipe.model
        found = find_gguf(gguf_model)
        want_hash = "sha256:" + sha256_file(found)
    return art, want_hash, gguf_model, found


def stale_results(recipe: Recipe, v: Variant, base, results: Path) -> list[str]:
    """The result files of a variant this run did not run (``--variants``) that do not match the
    recipe as it is now: other evaluation settings, or another model than its steps give (checked
    through the cache; a variant whose artifact is not cached cannot be checked, so its files count
    as not matching)."""
    from medslm.evaluate.runner import result_filename

    found = [(results / result_filename(v.name, t), t) for t in recipe.eval.tasks]
    found = [(f, t) for f, t in found if f.is_file()]
    if not found:
        return []
    got = variant_model(recipe, v, base, lambda m: None, build=False)
    return [f.name for f, t in found if got is None or not _result_ok(f, got[1], t, recipe.eval, v.dtype)]


def run_variant(recipe: Recipe, v: Variant, base, results: Path, threads: int | None, log) -> tuple:
    """Build one variant, export it where it ships (llama.cpp), evaluate what is not cached; return
    (name, the GGUF evaluated or None, the artifact's path) for the serve registry."""
    from medslm.evaluate.runner import result_filename

    art, want_hash, gguf_model, found = variant_model(recipe, v, base, log)
    todo = []
    for task in recipe.eval.tasks:
        if _result_ok(results / result_filename(v.name, task), want_hash, task, recipe.eval, v.dtype):
            log(f"  {v.name}: {task} cached")
        else:
            todo.append(task)
    if todo:
        evaluate_variant(art, v.name, todo, recipe.eval, results, threads, log, backend=v.backend,
                         model=gguf_model, dtype=v.dtype)
    return v.name, None if found is None else str(found), art.path


def variant_task(recipe_json: str, name: str, results: str) -> tuple:
    """One variant in a Ray worker (:mod:`medslm.pipeline_ray`): threads = its ``cpus``."""
    from medslm.models.loading import resolve

    recipe = Recipe.model_validate_json(recipe_json)
    v = next(x for x in recipe.variants if x.name == name)
    base = resolve(recipe.model).artifact()
    return run_variant(recipe, v, base, Path(results), max(1, int(v.cpus)),
                       lambda m: print(m, flush=True))  # Ray forwards a task's output to the driver


def run_recipe(recipe: Recipe, output: str | os.PathLike | None = None, log=print,
               threads: int | None = None, ray: str | None = None, only: list[str] | None = None) -> Path:
    """Run ``recipe``; ``ray``: its variants as Ray tasks (``"local"``: a local cluster, else a
    cluster address), the same results as the serial run. ``only``: run these variants of it (the
    others are neither built nor evaluated); the report still shows every variant of the recipe
    that has results in the folder, e.g. from an earlier full run."""
    from medslm.models.loading import resolve
    from medslm.outputs import replace_file

    chosen = select_variants(recipe, only)
    ships = [v.name for v in chosen if v.backend == "llamacpp"]
    if ships:  # checked before any work: those variants are exported and evaluated on llama.cpp
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise MedslmError(f"recipe {recipe.name}: variants {', '.join(ships)} run on llama.cpp, which needs "
                              "llama-cpp-python: pip install -e '.[llamacpp]' -c constraints.txt (it compiles "
                              "llama.cpp once, about 13 minutes on 2 cores)")
    out = run_output(recipe, output)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    replace_file(out / "recipe.json", recipe.model_dump_json(indent=1) + "\n")
    t0 = time.perf_counter()
    base = resolve(recipe.model).artifact()
    some = f" ({len(chosen)} run here: {', '.join(v.name for v in chosen)})" if only is not None else ""
    log(f"recipe {recipe.name}: model {recipe.model} ({base.hash[:19]}), {len(recipe.variants)} variants{some}, "
        f"tasks {', '.join(recipe.eval.tasks)} -> {out}")
    from medslm.held_out import describe, overlaps

    held_out = [describe(o) for o in overlaps(recipe)]
    for line in held_out:
        log(f"  warning: {line}")
    if ray is None:
        served = [run_variant(recipe, v, base, results, threads, log) for v in chosen]
    else:
        from medslm.pipeline_ray import run_variants

        served = run_variants(recipe, results, ray, log, variant_task, names=[v.name for v in chosen])
    shown, ran = [v.name for v in recipe.variants], {v.name for v in chosen}
    for v in recipe.variants:  # --variants: what it did not run is shown only where it still matches
        if v.name not in ran:
            stale = stale_results(recipe, v, base, results)
            if stale:
                shown.remove(v.name)
                log(f"  warning: {v.name}: left out of the report: {', '.join(stale)} no longer match the "
                    f"recipe (its evaluation settings or its model changed); rerun it with --variants {v.name}")
    for v, gguf_model, art_path in served:
        if v == recipe.serve:
            from medslm.serve.default_model import register

            e = register(Path(gguf_model) if gguf_model else art_path, recipe=recipe.name, variant=v, run=out)
            log(f"  {v}: `medslm serve` now serves {e['path']} by default")
    from medslm.report.build import build_report

    rep = build_report(results, out, task_order=recipe.eval.tasks, model_order=shown, held_out=held_out)
    log(f"done in {time.perf_counter() - t0:.0f}s; report: {rep['html']}")
    return out
