"""Recipes on tiny models: run, cache, resume after kill -9, clear errors, the report in Chromium."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers import fixtures
import pytest
from helpers import tiny

from medslm.errors import ConfigError
from medslm.recipe_load import load_recipe

RECIPE = """\
version: 1
name: tiny
model: {model}
eval:
  tasks: [medmcqa, pubmedqa]
  decode_bench: true
variants:
  - name: base
  - name: trim+int4
    steps:
      - {{method: trim, corpus: {corpus}}}
      - {{method: quantize, bits: 4, group_size: 16}}
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa")
    fixtures.medmcqa(root / "medmcqa")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    tiny.save_artifact("llama", tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny.CORPUS[1] + "\n\n" + tiny.CORPUS[3])
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(model=tmp_path / "model", corpus=corpus))
    return tmp_path, recipe


def run(recipe, out, **kw):
    return subprocess.run([sys.executable, "-m", "medslm", "run", str(recipe), "--output", str(out)],
                          capture_output=True, text=True, timeout=600, **kw)


def metrics(out: Path) -> dict:
    lb = json.loads((out / "leaderboard.json").read_text())
    return {m["label"]: {t: v["value"] for t, v in m["metrics"].items()} for m in lb["models"]}


def test_run_then_rerun_is_all_cached(setup):
    tmp, recipe = setup
    p = run(recipe, tmp / "out")
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp / "out"
    for f in ("report.html", "report.md", "leaderboard.json"):
        assert (out / f).is_file()
    m = metrics(out)
    assert set(m) == {"base", "trim+int4"} and set(m["base"]) == {"medmcqa", "pubmedqa"}
    assert "trim -> quantize" in (out / "report.md").read_text()
    assert "## Held-out check" in (out / "report.md").read_text() and "none reads one." in (out / "report.md").read_text()
    t = time.time()
    again = run(recipe, tmp / "out")
    assert again.returncode == 0
    assert again.stdout.count("cached") == 2 + 4  # 2 steps, 4 evaluations
    assert time.time() - t < 30
    assert metrics(out) == m


def test_a_renamed_variant_leaves_the_report_and_keeps_its_old_results(setup):
    """The report of a recipe shows its variants only; results of a variant it no longer has stay
    on disk and are counted, not shown as a row."""
    tmp, recipe = setup
    assert run(recipe, tmp / "out").returncode == 0
    renamed = tmp / "renamed.yaml"
    renamed.write_text(Path(recipe).read_text().replace("  - name: trim+int4", "  - name: trimmed-int4"))
    p = run(renamed, tmp / "out")
    assert p.returncode == 0, p.stderr[-2000:]
    assert set(metrics(tmp / "out")) == {"base", "trimmed-int4"}
    assert sorted(f.name for f in (tmp / "out" / "results").glob("trim_int4__*.json")) == [
        "trim_int4__medmcqa.json", "trim_int4__pubmedqa.json"]
    assert "(2 result files in" in (tmp / "out" / "report.md").read_text()


def test_variants_runs_only_those_and_the_report_keeps_the_others(setup):
    """--variants builds and evaluates the named variants only; a later full run finds them cached
    and the report of a partial run still shows the variants with results already in the folder."""
    tmp, recipe = setup
    out = tmp / "out"
    cmd = [sys.executable, "-m", "medslm", "run", str(recipe), "--output", str(out)]
    p = subprocess.run(cmd + ["--variants", "trim+int4"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(f.name for f in (out / "results").glob("*.json")) == [
        "trim_int4__medmcqa.json", "trim_int4__pubmedqa.json"]
    assert set(metrics(out)) == {"trim+int4"}
    full = run(recipe, out)
    assert full.returncode == 0, full.stderr[-2000:]
    assert full.stdout.count("cached") == 2 + 2  # its 2 steps and 2 evaluations; base evaluated now
    m = metrics(out)
    again = subprocess.run(cmd + ["--variants", "base"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("cached") == 2
    assert metrics(out) == m and set(m) == {"base", "trim+int4"}
    # a variant left out of a partial run whose model or evaluation changed since its results were
    # written is left out of the report (its files stay), with the reason
    for edit, ran, stale in ((("group_size: 16", "group_size: 32"), "base", "trim+int4"),  # its model
                             (("  decode_bench: true", "  decode_bench: true\n  seed: 7"), "trim+int4", "base")):
        changed = tmp / f"changed-{ran}.yaml"
        changed.write_text(Path(recipe).read_text().replace(*edit))
        p = subprocess.run([sys.executable, "-m", "medslm", "run", str(changed), "--output", str(out),
                            "--variants", ran], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        assert set(metrics(out)) == {ran} and f"{stale}: left out of the report" in p.stdout
        assert (out / "results" / f"{stale.replace('+', '_')}__medmcqa.json").is_file()
    for bad, msg in ((["--variants", "base,int8"], "names no variant of recipe tiny: int8"),
                     (["--variants", "base,base"], "lists a variant twice"),
                     (["--variants", ",", "--check"], "is empty")):
        p = subprocess.run(cmd + bad, capture_output=True, text=True, timeout=600)
        assert p.returncode != 0 and msg in p.stderr and "choose from base, trim+int4" in p.stderr, p.stderr[-800:]
        assert "Traceback" not in p.stderr


def test_kill_during_run_then_resume(setup):
    tmp, recipe = setup
    out = tmp / "killed"
    p = subprocess.Popen([sys.executable, "-m", "medslm", "run", str(recipe), "--output", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    while True:  # kill -9 right after the first variant's first step finished
        line = p.stdout.readline()
        lines.append(line)
        if "trim+int4: trim done" in line or not line:
            break
    p.kill()
    p.wait()
    assert "trim+int4: trim done" in lines[-1]
    q = run(recipe, out)
    assert q.returncode == 0, q.stderr[-2000:]
    assert "trim+int4: trim cached" in q.stdout  # the finished step was not recomputed
    assert "base: medmcqa cached" in q.stdout
    ref = run(recipe, tmp / "ref")
    assert ref.returncode == 0
    assert metrics(out) == metrics(tmp / "ref")


@pytest.mark.parametrize("edit,msg", [
    (lambda s: s.replace("  decode_bench: true", "  decode_bench: true\n  limt: 5"), r":7: eval.limt: unknown key"),
    (lambda s: s.replace("bits: 4", "bits: 9"), r":12: variants.1.steps.1: .*bits=9"),
    (lambda s: s.replace("tasks: [medmcqa, pubmedqa]", "tasks: [medmcqa, pubmedqaa]"), r":5: eval.tasks.*Did you mean pubmedqa"),
    (lambda s: s.replace("version: 1", "version: 7"), r":1: version=7: recipe version 7 is not supported"),
    (lambda s: s.replace("- name: base", "- name: base\n    stepz: []"), r":9: variants.0.stepz: unknown key"),
    (lambda s: s.replace("- name: trim+int4", "- name: trim+int4\n    backend: llamacpp"),
     r":9: variants.1: .*GGUF blocks hold 32 weights; give the step target: gguf"),
    (lambda s: s.replace("- name: trim+int4", "- name: trim+int4\n    backend: llamacpp\n    gguf: q4_k_m"),
     r":9: variants.1: .*after a quantize step the GGUF holds medslm's own integers"),
    (lambda s: s.replace("- name: base", "- name: base\n    gguf: q4_k_m"), r":8: variants.0: .*only applies with backend: llamacpp"),
    (lambda s: s.replace("- name: base", "- name: base\n    backend: llamacpp\n    dtype: bf16"),
     r":8: variants.0: .*dtype: applies to the hf backend"),
    (lambda s: s.replace("- name: base", "- name: base\n    dtype: int3"), r":9: variants.0.dtype='int3': .*'fp32', 'bf16' or 'fp16'"),
    (lambda s: s.replace("version: 1", "version: 1\nserve: nope"), r"serve='nope' names no variant; choose one of base, trim\+int4"),
    (lambda s: s.replace("  decode_bench: true", "  decode_bench: true\n  chat_template: always"), r"eval.chat_template"),
])
def test_recipe_errors_name_line_and_key(setup, edit, msg):
    tmp, recipe = setup
    recipe.write_text(edit(recipe.read_text()))
    with pytest.raises(ConfigError, match=msg):
        load_recipe(recipe)


def test_a_variant_can_be_evaluated_in_bf16(setup):
    tmp, recipe = setup
    text = recipe.read_text().replace("  - name: trim+int4", "  - name: base-bf16\n    dtype: bf16\n  - name: trim+int4")
    text = text.replace("tasks: [medmcqa, pubmedqa]", "tasks: [medmcqa]")
    recipe.write_text(text)
    p = run(recipe, tmp / "out")
    assert p.returncode == 0, p.stderr[-2000:]
    res = {f.name: json.loads(f.read_text()) for f in (tmp / "out" / "results").glob("*.json")}
    dt = {r["model"]["label"] if "label" in r["model"] else n: r["model"]["dtype"] for n, r in res.items()}
    assert sorted(dt.values()).count("bfloat16") == 1 and "float32" in dt.values(), dt


def test_missing_model_fails_before_work(setup):
    tmp, recipe = setup
    recipe.write_text(recipe.read_text().replace(str(tmp / "model"), str(tmp / "nope")))
    p = run(recipe, tmp / "out")
    assert p.returncode != 0 and ":3: model:" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp / "out").exists()


def test_quickstart_recipe_is_valid(monkeypatch, tmp_path):
    from medslm.commands.run import default_recipe

    r = load_recipe(default_recipe())
    assert [v.name for v in r.variants] == ["base", "llamacpp-q4_k_m", "int4-gguf", "trim+int4-gguf"]
    assert r.eval.tasks == ["pubmedqa", "medmcqa", "medppl"]
    assert [v.backend for v in r.variants] == ["hf", "llamacpp", "llamacpp", "llamacpp"]  # where it ships
    assert r.eval.limit_for("medmcqa") >= 100


def test_a_recipe_registers_the_model_serve_runs_by_default(setup, monkeypatch):
    """serve: VARIANT registers that variant's model once built; `medslm serve` without --model
    takes the newest registered one that still exists unchanged, else the base with a note."""
    from medslm.serve.default_model import BASE, BASE_NOTE, default_model

    tmp, recipe = setup
    monkeypatch.setenv("MEDSLM_CACHE", str(tmp / "cache"))  # the cache the recipe's run used
    assert default_model() == (BASE, BASE_NOTE) and "not instruction-tuned" in BASE_NOTE
    recipe.write_text(recipe.read_text().replace("version: 1", "version: 1\nserve: trim+int4"))
    p = run(recipe, tmp / "out")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "`medslm serve` now serves" in p.stdout
    model, note = default_model()
    art = json.loads((tmp / "cache" / "served.json").read_text())["models"][0]
    assert model == art["path"] and art["variant"] == "trim+int4" and "trim+int4" in note
    assert (Path(model) / "medslm.json").is_file()  # the built variant's artifact
    shutil.rmtree(model)  # gone: back to the base
    assert default_model() == (BASE, BASE_NOTE)


def test_report_renders_plots_in_chromium(setup):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    tmp, recipe = setup
    assert run(recipe, tmp / "out").returncode == 0
    html = (tmp / "out" / "report.html").read_text()
    assert html.count("<svg") == 4  # 2 tasks x (size, speed) and "http" not in html.split("<svg")[0].replace("http://www.w3.org", "")
    png = tmp / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp / 'profile'}", "--window-size=1200,1600",
                    f"--screenshot={png}", (tmp / "out" / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    import numpy as np

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    blue = int(((b > 180) & (r < 90) & (g > 80) & (g < 150)).sum())  # the plots' #1f6feb markers
    assert blue > 200, blue  # the points and error bars are drawn, not just the page
    assert a.shape[0] >= 1600 and len(np.unique(a.reshape(-1, 3), axis=0)) > 50


def test_pareto_front():
    from medslm.report.build import pareto

    # (MiB, accuracy): smaller is cheaper. (100, 30) dominates (700, 25); (1000, 40) is the most accurate
    pts = [(1000, 40.0), (700, 25.0), (100, 30.0), (800, 40.0)]
    assert pareto(pts, higher_x_better=False) == [2, 3]
    # speed (higher is better): the fastest and the most accurate survive
    assert pareto([(10, 30.0), (5, 40.0), (4, 35.0)], higher_x_better=True) == [0, 1]


def test_a_quantized_variant_ships_and_is_measured_as_gguf(tmp_path, monkeypatch):
    """backend: llamacpp after a quantize step: the artifact is exported as blocks of its own
    integers, evaluated on llama.cpp, and reported with the GGUF's hash and bytes; its scores
    follow the same artifact's on the hf backend."""
    pytest.importorskip("llama_cpp")
    root = tmp_path / "mirror"
    fixtures.pubmedqa(root / "pubmedqa")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(root))
    tiny.save_artifact("gemma3", tmp_path / "model", spm=True)
    step = "{method: quantize, bits: 4, target: gguf, embeddings: int4}"
    recipe = tmp_path / "ship.yaml"
    recipe.write_text(f"""version: 1
name: ship
model: {tmp_path / "model"}
eval:
  tasks: [medppl]
variants:
  - name: base
  - name: q4-hf
    steps: [{step}]
  - name: q4-gguf
    backend: llamacpp
    steps: [{step}]
""")
    p = run(recipe, tmp_path / "out")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "q4-gguf: quantize cached" in p.stdout and "q4-gguf: export to GGUF q4_0" in p.stdout
    res = {f.name.split("__")[0]: json.loads(f.read_text()) for f in (tmp_path / "out" / "results").glob("*.json")}
    g, h = res["q4-gguf"], res["q4-hf"]
    from medslm import settings
    from medslm.system import sha256_file

    gguf = next((settings.cache_dir() / "gguf").glob("*-q4_0.gguf"))
    assert g["model"]["hash"] == "sha256:" + sha256_file(gguf) and g["model"]["bytes"] == gguf.stat().st_size
    assert g["model"]["bytes"] < h["model"]["bytes"]
    assert g["model"]["chain"] == "base -> quantize -> export q4_0"  # from the export's sidecar
    # per word of each document; llama.cpp's 8-bit activations: near, not equal
    diffs = [abs(a["loglik"] - b["loglik"]) / a["words"] for a, b in zip(g["examples"], h["examples"])]
    assert len(diffs) >= 2 and max(diffs) < 0.1, diffs  # (the tiny vocabulary: ~3 tokens a word)
    lb = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert {c["model"] for c in lb["paired"]} == {"q4-hf", "q4-gguf"}


@pytest.mark.parametrize("name", ["medical-assistant", "task-families", "medical-sft", "full-benchmark",
                                  "domain-prune-distill"])
def test_every_shipped_recipe_is_valid(name):
    from medslm.commands.run import default_recipe

    r = load_recipe(Path(default_recipe()).with_name(f"{name}.yaml"))
    assert r.name == name and r.variants
    if name == "medical-assistant":  # the assistant is asked as it was trained, and serve runs the GGUF
        sft = r.variants[1].steps[0]
        assert sft["chat_template"] is True and r.eval.chat_template == "auto" and r.serve == "assistant-gguf"
        assert all(t in r.eval.tasks for t in ("medquad", "meqsum", "medtext", "medsafety", "pubmedqa", "medmcqa"))


def test_variants_as_ray_tasks_equal_the_serial_run(setup, monkeypatch):
    """`medslm run --ray` on a local cluster: each variant a task (its own cache, so every step is
    built in the task), the same per-question predictions and metrics as the serial run."""
    pytest.importorskip("ray")
    from medslm.evaluate.runner import result_filename

    tmp, recipe = setup
    assert run(recipe, tmp / "serial").returncode == 0
    monkeypatch.setenv("MEDSLM_CACHE", str(tmp / "ray-cache"))  # nothing cached: the tasks build it all
    p = subprocess.run([sys.executable, "-m", "medslm", "run", str(recipe), "--output", str(tmp / "ray"), "--ray"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "ray: 2 variants as tasks" in p.stdout and "trim+int4: quantize" in p.stdout + p.stderr
    assert (tmp / "ray-cache" / "artifacts").is_dir()
    a, b = metrics(tmp / "serial"), metrics(tmp / "ray")
    assert a.keys() == b.keys() == {"base", "trim+int4"}
    for label in a:
        for task in ("medmcqa", "pubmedqa"):
            ra, rb = (json.loads((tmp / d / "results" / result_filename(label, task)).read_text())
                      for d in ("serial", "ray"))
            assert [e["pred"] for e in ra["examples"]] == [e["pred"] for e in rb["examples"]]
            assert ra["model"]["hash"] == rb["model"]["hash"]
    assert a == b  # every task's metric of every variant
    one = subprocess.run([sys.executable, "-m", "medslm", "run", str(recipe), "--output", str(tmp / "ray-one"),
                          "--ray", "--variants", "trim+int4"], capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-3000:]
    assert "ray: 1 variants as tasks" in one.stdout  # --variants: the other variant is no task
    assert sorted(f.name for f in (tmp / "ray-one" / "results").glob("*.json")) == [
        "trim_int4__medmcqa.json", "trim_int4__pubmedqa.json"]
    assert metrics(tmp / "ray-one") == {"trim+int4": a["trim+int4"]}


def test_an_optional_stage_switched_off_keeps_the_cache_key():
    """A GPTQ step without recovery keys its cached artifact as it did before recovery existed (its
    settings are left out while recover_steps is 0, whatever they say); with recovery on they count."""
    import hashlib
    import json

    from medslm.methods import parse_config
    from medslm.pipeline import step_key

    step = {"method": "quantize", "algorithm": "gptq", "bits": 4, "target": "gguf"}
    old = {k: v for k, v in parse_config(step).to_dict().items() if not k.startswith("recover_")}
    want = hashlib.sha256(json.dumps(["sha256:x", old], sort_keys=True).encode()).hexdigest()[:20]
    assert step_key("sha256:x", step) == step_key("sha256:x", step | {"recover_lr": 0.1}) == want
    on = step | {"recover_steps": 5}
    assert step_key("sha256:x", on) not in (want, step_key("sha256:x", on | {"recover_lr": 0.1}))
    assert step_key("sha256:x", step | {"samples": 8}) != want  # any other field still counts


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_evaluation_subprocess_ends_with_the_run_that_started_it():
    """A recipe run killed by its PID (not its process group) takes its evaluation with it; without
    die_with_parent the same child outlives it (the control), as an orphan writing results would."""
    code = ("import subprocess, sys, time\n"
            "from medslm.system import die_with_parent\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], "
            "preexec_fn=die_with_parent if sys.argv[1] == '1' else None)\n"
            "print(c.pid, flush=True)\n"
            "time.sleep(30)\n")
    ended = {}
    for guarded in ("1", "0"):
        parent = subprocess.Popen([sys.executable, "-c", code, guarded], stdout=subprocess.PIPE, text=True)
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _alive(child) and guarded == "1":
            time.sleep(0.1)
        ended[guarded] = not _alive(child)
        if _alive(child):
            os.kill(child, 9)
    assert ended == {"1": True, "0": False}


def test_recipe_evaluations_run_with_die_with_parent(monkeypatch, tmp_path):
    from medslm import pipeline
    from medslm.system import die_with_parent

    seen = {}

    def fake_run(cmd, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(subprocess, "run", fake_run)
    spec = pipeline.EvalSpec(tasks=["medppl"])
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.evaluate_variant(type("A", (), {"path": tmp_path})(), "x", ["medppl"], spec, tmp_path, 1,
                                  lambda *a: None)
    assert seen["preexec_fn"] is die_with_parent


def test_variants_checks_each_left_out_result_against_its_own_task(setup):
    """A variant --variants does not run keeps its results that still match, each checked against
    its own task's settings (here the tasks' limits differ, and one of its files is gone)."""
    tmp, recipe = setup
    limited = tmp / "limited.yaml"
    limited.write_text(Path(recipe).read_text().replace("  decode_bench: true",
                                                        "  decode_bench: true\n  limit: {medmcqa: 3, pubmedqa: 4}"))
    out = tmp / "out"
    assert run(limited, out).returncode == 0
    (out / "results" / "base__medmcqa.json").unlink()
    p = subprocess.run([sys.executable, "-m", "medslm", "run", str(limited), "--output", str(out),
                        "--variants", "trim+int4"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "left out of the report" not in p.stdout
    m = metrics(out)
    assert set(m) == {"base", "trim+int4"} and set(m["base"]) == {"pubmedqa"}
