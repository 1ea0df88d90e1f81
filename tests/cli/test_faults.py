"""kill -9 at seeded random points of every command that writes, then rerun: what is there after a
kill is either nothing or the whole result, never half of one, and the rerun's final artifact or
result equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from helpers import fixtures
import pytest
from helpers import tiny

from medslm.models.artifact import ModelArtifact


def medslm(args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "medslm", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def kill_after(args, env, seconds: float) -> None:
    p = subprocess.Popen([sys.executable, "-m", "medslm", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    time.sleep(seconds)
    p.kill()
    p.wait()


@pytest.fixture
def env(tmp_path):
    mirror = tmp_path / "mirror"
    fixtures.pubmedqa(mirror / "pubmedqa")
    fixtures.medmcqa(mirror / "medmcqa")
    fixtures.medquad(mirror / "medquad")
    calib = tmp_path / "calib.txt"
    calib.write_text("\n\n".join(tiny.CORPUS))
    e = dict(os.environ, MEDSLM_DATA_DIR=str(mirror), MEDSLM_CACHE=str(tmp_path / "cache"),
             CALIB=str(calib))
    return e


def _model(tmp_path):
    return tiny.save_artifact("llama", tmp_path / "model").path


METHODS = {
    "quantize": ["quantize", "--bits", "4", "--algorithm", "gptq", "--sequential", "--group-size", "16",
                 "--calibration", "{CALIB}", "--samples", "8"],
    "prune": ["prune", "--algorithm", "sparsegpt", "--calibration", "{CALIB}", "--samples", "8"],
    "trim": ["trim", "--corpus", "{CALIB}"],
    "finetune": ["finetune", "--data", "pubmedqa:fit@1", "--method", "full", "--max-steps", "4",
                 "--seq-len", "64", "--checkpoint-every", "1", "--batch-size", "1"],
}


@pytest.mark.parametrize("method", list(METHODS))
def test_kill_and_rerun_gives_the_uninterrupted_artifact(method, tmp_path, env):
    model = _model(tmp_path)
    args = [a.format(**env) for a in METHODS[method]] + ["--model", str(model)]
    t = time.perf_counter()
    ref = medslm(args + ["--out", str(tmp_path / "ref")], env)
    took = time.perf_counter() - t
    assert ref.returncode == 0, ref.stderr
    want = ModelArtifact.open(tmp_path / "ref").hash
    rng = random.Random(f"{method}-kill")
    for i, frac in enumerate(sorted(rng.uniform(0.3, 0.95) for _ in range(2))):
        out = tmp_path / f"out{i}"
        kill_after(args + ["--out", str(out)], env, frac * took)
        if out.exists():  # the kill came after the rename: the whole artifact, nothing less
            assert ModelArtifact.open(out).hash == want
            ModelArtifact.open(out).verify()
        else:
            r = medslm(args + ["--out", str(out)], env)
            assert r.returncode == 0, r.stderr
            assert ModelArtifact.open(out).hash == want
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".old-out{i}")]
    assert (model / "medslm.json").is_file() and ModelArtifact.open(model).verify() is None


def test_kill_and_rerun_of_a_recipe_gives_the_uninterrupted_results(tmp_path, env):
    import yaml

    model = _model(tmp_path)
    recipe = {"version": 1, "name": "faults", "model": str(model),
              "eval": {"tasks": ["pubmedqa", "medmcqa"], "limit": 3, "decode_bench": False},
              "variants": [{"name": "base"}, {"name": "int8", "steps": [{"method": "quantize", "bits": 8, "group_size": 16}]},
                           {"name": "int4", "steps": [{"method": "quantize", "bits": 4, "group_size": 16}]}]}
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(recipe))
    t = time.perf_counter()
    ref = medslm(["run", str(f), "--output", str(tmp_path / "ref")], dict(env, MEDSLM_CACHE=str(tmp_path / "c1")))
    took = time.perf_counter() - t
    assert ref.returncode == 0, ref.stderr
    run_env = dict(env, MEDSLM_CACHE=str(tmp_path / "c2"))
    out = tmp_path / "run"
    for frac in (0.4, 0.75):
        kill_after(["run", str(f), "--output", str(out)], run_env, frac * took)
        for res in (out / "results").glob("*.json"):  # whatever is there is whole
            json.loads(res.read_text())
    r = medslm(["run", str(f), "--output", str(out)], run_env)
    assert r.returncode == 0, r.stderr
    a = sorted((out / "results").glob("*.json"))
    b = sorted((tmp_path / "ref" / "results").glob("*.json"))
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 6
    for x, y in zip(a, b):
        rx, ry = json.loads(x.read_text()), json.loads(y.read_text())
        assert rx["metrics"] == ry["metrics"] and rx["examples"] == ry["examples"]


@pytest.mark.integration
def test_kill_and_rerun_of_an_export_gives_the_uninterrupted_file(tmp_path):
    pytest.importorskip("llama_cpp")
    env = dict(os.environ)
    t = time.perf_counter()
    ref = medslm(["export", "--model", "gemma3-270m", "--type", "q8_0", "--out", str(tmp_path / "ref.gguf")], env)
    took = time.perf_counter() - t
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out.gguf"
    kill_after(["export", "--model", "gemma3-270m", "--type", "q8_0", "--out", str(out)], env, 0.6 * took)
    assert not out.exists() or out.read_bytes() == (tmp_path / "ref.gguf").read_bytes()
    if not out.exists():
        r = medslm(["export", "--model", "gemma3-270m", "--type", "q8_0", "--out", str(out)], env)
        assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (tmp_path / "ref.gguf").read_bytes()
    assert json.loads(Path(str(out) + ".medslm.json").read_text())["sha256"] == \
        json.loads(Path(str(tmp_path / "ref.gguf") + ".medslm.json").read_text())["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-export")]


def test_a_kill_between_the_two_renames_restores_the_old_artifact(tmp_path):
    """write_artifact moves the old artifact aside, then the new one in; a kill in between leaves
    only the aside copy, which the next write (or sweep) moves back instead of deleting."""
    from medslm.outputs import sweep_stale

    art = tiny.save_artifact("gpt2", tmp_path / "a")
    want = art.hash
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that is gone
    aside = tmp_path / f".old-a-{dead}-abcd1234"
    (tmp_path / "a").rename(aside)
    junk = tmp_path / f".tmp-a-{dead}-ffff0000"
    junk.mkdir()
    sweep_stale(tmp_path / "a")
    assert ModelArtifact.open(tmp_path / "a").hash == want and not aside.exists() and not junk.exists()
    ModelArtifact.open(tmp_path / "a").verify()


def test_an_interrupted_swap_puts_the_old_artifact_back(tmp_path, monkeypatch):
    """--overwrite of an artifact interrupted between its two renames: the old one is in place."""
    from pathlib import Path as P

    from medslm.models.artifact import ModelArtifact

    art = tiny.save_artifact("gpt2", tmp_path / "a")
    want = art.hash
    real = P.rename

    def rename(self, target):
        if self.name.startswith(".tmp-a-"):  # the new artifact moving in: interrupted
            raise KeyboardInterrupt
        return real(self, target)

    monkeypatch.setattr(P, "rename", rename)
    m = tiny.model("gpt2", seed=5)
    with pytest.raises(KeyboardInterrupt):
        ModelArtifact.save(m, tiny.tokenizer(), tmp_path / "a", source="x", overwrite=True)
    monkeypatch.setattr(P, "rename", real)
    assert ModelArtifact.open(tmp_path / "a").hash == want
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-a-")]
