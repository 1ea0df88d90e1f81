"""The real embedded Gemma 3 270M (converted once into MEDSLM_CACHE; about a minute the first time)."""

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend():
    from medslm.backends.hf import HFBackend

    return HFBackend("gemma3-270m")


def test_loads_from_package_without_network(backend):
    import os

    from medslm.models.loading import resolve

    os.environ["HF_HUB_OFFLINE"] = "1"
    t = time.time()
    r = resolve("gemma3-270m")
    model, tok = r.artifact().load()
    assert time.time() - t < 10
    d = backend.describe()
    assert 260e6 < d["parameters"] < 275e6 and d["dtype"] == "float32"


def test_scurvy_vitamin_c_beats_d(backend):
    from medslm.backends.base import LoglikelihoodRequest

    ctx = "Question: Which vitamin deficiency causes scurvy?\nAnswer: Vitamin"
    (c, _), (d, _) = backend.loglikelihood([LoglikelihoodRequest(ctx, " C"), LoglikelihoodRequest(ctx, " D")])
    assert c > d


def test_greedy_generation_returns_text(backend):
    from medslm.backends.base import GenerateRequest

    out = backend.generate([GenerateRequest("The most common cause of community-acquired pneumonia is",
                                            until=("\n\n",), max_tokens=16)])[0]
    assert len(out.strip()) > 0


def test_pull_is_a_noop_the_second_time():
    p = subprocess.run([sys.executable, "-m", "medslm", "models", "pull", "gemma3-270m"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "already present" in p.stdout
