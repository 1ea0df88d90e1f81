import subprocess
import sys
import time



def medslm(*args, env=None):
    return subprocess.run([sys.executable, "-m", "medslm", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_help_is_fast_and_never_imports_torch():
    t = time.time()
    p = medslm("--help")
    assert p.returncode == 0 and "models" in p.stdout
    assert time.time() - t < 1.5  # includes interpreter start-up; the budget is 1 s on a quiet machine
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import medslm.cli; "
                          "medslm.cli.build_parser()"], capture_output=True, text=True)
    mods = {line.split("|")[-1].strip() for line in imp.stderr.splitlines()}
    assert "torch" not in mods and "transformers" not in mods


def test_models_ls_lists_presets_with_licenses():
    p = medslm("models", "ls")
    assert p.returncode == 0
    for name in ["gemma3-270m", "biomedlm", "me-llama", "biogpt", "meditron-7b", "biomistral-7b"]:
        assert name in p.stdout
    assert "Gemma Terms of Use" in p.stdout


def test_unknown_hub_model_offline_is_one_clear_line(monkeypatch):
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = medslm("models", "info", "org/unknown", env=env)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0] and "--model PATH" in lines[0]
    assert "Traceback" not in p.stderr


def test_info_shows_chain(tiny_artifacts):
    p = medslm("models", "info", str(tiny_artifacts["gemma3"].path))
    assert p.returncode == 0, p.stderr
    assert "Gemma3ForCausalLM" in p.stdout and "sha256:" in p.stdout and "chain" in p.stdout
