"""Energy and carbon with codecarbon: every eval result and compression step carries them, with the
method they came from; the report shows them."""

from __future__ import annotations

import json

import pytest
from helpers import fixtures, tiny

pytestmark = pytest.mark.energy


@pytest.fixture
def data(tmp_path, monkeypatch):
    fixtures.pubmedqa(tmp_path / "d" / "pubmedqa")
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEDSLM_GRID_COUNTRY", "FRA")


def test_eval_results_carry_energy_and_carbon(tmp_path, data):
    pytest.importorskip("codecarbon")
    from medslm.cli import main
    from medslm.report.build import build_report

    art = tiny.save_artifact("llama", tmp_path / "m")
    out = tmp_path / "r"
    assert main(["eval", "--model", str(art.path), "--tasks", "pubmedqa", "--output", str(out), "--label", "base",
                 "--no-decode-bench", "--bootstrap", "0"]) == 0
    r = json.loads(next(out.glob("*.json")).read_text())
    e = r["energy"]
    assert e["wh"] > 0 and e["cpu_wh"] > 0 and e["wh"] == pytest.approx(e["cpu_wh"] + e["ram_wh"] + e["gpu_wh"], rel=1e-3, abs=1e-8)
    assert e["country"] == "FRA" and e["gco2e"] == pytest.approx(e["wh"] * e["grid_gco2e_per_kwh"] / 1000, rel=1e-2, abs=1e-8)
    assert e["tokens"] == r["efficiency"]["tokens_computed"] > 0
    assert e["wh_per_1k_tokens"] == pytest.approx(1000 * e["wh"] / e["tokens"], rel=1e-4, abs=1e-8)
    assert e["method"].startswith("codecarbon") and ("RAPL" in e["method"] or "estimated" in e["method"])
    rep = build_report(out, tmp_path / "rep")
    md = open(rep["md"]).read()
    assert "Wh" in md.splitlines()[4] and f"{e['wh']:.3g}" in md and e["method"] in md
    assert "evaluation energy (Wh per 1,000 tokens)" in open(rep["html"]).read()
    # rerun: every request cached, nothing computed, so no energy per token is claimed
    assert main(["eval", "--model", str(art.path), "--tasks", "pubmedqa", "--output", str(out), "--label", "base",
                 "--no-decode-bench", "--bootstrap", "0", "--overwrite"]) == 0
    again = json.loads(next(out.glob("*.json")).read_text())["energy"]
    assert "tokens" not in again and "wh_per_1k_tokens" not in again


def test_compression_steps_record_their_energy(tmp_path, data):
    pytest.importorskip("codecarbon")
    from medslm.methods import compress

    art = tiny.save_artifact("llama", tmp_path / "m")
    q = compress(art, {"method": "quantize", "bits": 4, "group_size": 16}, tmp_path / "q")
    e = q.meta.steps[-1]["energy"]
    assert e["wh"] > 0 and e["seconds"] > 0 and e["method"].startswith("codecarbon")


def test_serving_benchmark_levels_carry_energy(tmp_path):
    pytest.importorskip("codecarbon")
    import os
    import subprocess
    import sys

    from helpers.serving import running_process

    with running_process(delay=0.005, max_tokens=8) as base:
        p = subprocess.run([sys.executable, "-m", "medslm", "bench", "serve", "--url", base, "--concurrency", "1,2",
                            "--requests", "4", "--max-tokens", "8", "--out", str(tmp_path / "b.json")],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "MEDSLM_ENERGY": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "b.json").read_text())
    for lv in res["levels"]:
        e = lv["energy"]
        assert e["wh"] > 0 and e["tokens"] == lv["output_tokens"] > 0 and "(machine)" in e["method"]
        assert e["wh_per_1k_tokens"] == pytest.approx(1000 * e["wh"] / e["tokens"], rel=1e-4, abs=1e-8)
    assert "energy: the whole machine's during each level" in p.stdout
