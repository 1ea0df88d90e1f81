"""One table of bad input for the whole CLI: every case exits with a code, prints one message that
names the thing and the fix, shows no traceback, and leaves every file that existed before it
byte-identical (and creates none, outside the medslm cache).

Each case runs ``medslm.cli.main`` in this process (argparse errors included), on a world of
small files built fresh for it: a tiny model, a damaged copy of it, a user's own files, data in
the upstream formats, recipes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import fixtures
import pytest

from medslm.cli import main

CACHE = "medslm-cache"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, the medslm cache left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel == CACHE or rel.startswith(CACHE + "/"):
            continue
        out[rel] = p.read_bytes() if p.is_file() else None
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def world(tmp_path, tiny_artifacts, monkeypatch):
    """The files every case may point at (formatted into the argv as {name})."""
    w = {"tmp": tmp_path}
    src = tiny_artifacts["gemma3"].path
    w["model"] = tmp_path / "models" / "src"
    shutil.copytree(src, w["model"])
    (tmp_path / "models" / "keep.txt").write_text("a file beside the model\n")
    w["models"] = tmp_path / "models"
    w["other"] = tmp_path / "other-artifact"
    shutil.copytree(src, w["other"])
    w["trunc"] = tmp_path / "truncated"
    shutil.copytree(src, w["trunc"])
    f = w["trunc"] / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    w["badmeta"] = tmp_path / "badmeta"
    shutil.copytree(src, w["badmeta"])
    (w["badmeta"] / "medslm.json").write_text("[]")
    w["notjson"] = tmp_path / "notjson"
    shutil.copytree(src, w["notjson"])
    (w["notjson"] / "medslm.json").write_text("{not json")
    w["changed"] = tmp_path / "changed"
    shutil.copytree(src, w["changed"])
    cfg = json.loads((w["changed"] / "config.json").read_text())
    cfg["_note"] = "edited by hand"
    (w["changed"] / "config.json").write_text(json.dumps(cfg))  # same loadable model, other bytes
    w["notes"] = tmp_path / "notes.txt"
    w["notes"].write_text("my own notes, not medslm's\n")
    w["mine"] = tmp_path / "mine"
    w["mine"].mkdir()
    (w["mine"] / "thesis.tex").write_text("\\section{Results}\n")
    (tmp_path / "mine.gguf").write_bytes(b"GGUF not really")
    w["mine_gguf"] = tmp_path / "mine.gguf"
    mirror = tmp_path / "mirror"
    fixtures.pubmedqa(mirror / "pubmedqa")
    fixtures.medmcqa(mirror / "medmcqa")
    fixtures.medquad(mirror / "medquad")
    w["mirror"] = mirror
    bad = tmp_path / "badmirror" / "medmcqa"
    bad.mkdir(parents=True)
    (bad / "validation.jsonl").write_text(json.dumps({"id": "x", "question": "Q?", "opa": "a", "opb": "b",
                                                      "opc": "c", "opd": "d", "cop": 7}) + "\n")
    w["badmedmcqa"] = bad
    monkeypatch.setenv("MEDSLM_DATA_DIR", str(mirror))
    w["cache"] = tmp_path / CACHE
    recipe = {"version": 1, "name": "r", "model": str(w["model"]),
              "eval": {"tasks": ["pubmedqa"], "limit": 2}, "variants": [{"name": "base"}]}

    def write_recipe(name, **changes):
        r = json.loads(json.dumps(recipe))
        for k, v in changes.items():
            if k.startswith("eval_"):
                r["eval"][k[5:]] = v
            else:
                r[k] = v
        p = tmp_path / f"{name}.yaml"
        import yaml

        p.write_text(yaml.safe_dump(r))
        return p

    w["r_limit0"] = write_recipe("limit0", eval_limit=0)
    w["r_limitneg"] = write_recipe("limitneg", eval_limit=-1)
    w["r_limitdict0"] = write_recipe("limitdict0", eval_limit={"pubmedqa": 0})
    w["r_limitother"] = write_recipe("limitother", eval_limit={"medqa_4options": 5})
    w["r_unknown"] = write_recipe("unknown", colour="blue")
    w["r_fewshot"] = write_recipe("fewshot", eval_fewshot=-2)
    w["r_ok"] = write_recipe("ok")
    w["r_badstep"] = write_recipe("badstep", variants=[{"name": "q", "steps": [{"method": "quantize",
                                                                                 "bits": 5}]}])
    (tmp_path / "notyaml.yaml").write_text("version: [1\n")
    w["r_notyaml"] = tmp_path / "notyaml.yaml"
    (tmp_path / "cfg-list.yaml").write_text("- bits\n- 4\n")
    w["cfg_list"] = tmp_path / "cfg-list.yaml"
    (tmp_path / "cfg-unknown.yaml").write_text("bits: 4\ncolour: blue\n")
    w["cfg_unknown"] = tmp_path / "cfg-unknown.yaml"
    (tmp_path / "cfg-bits.yaml").write_text("bits: 3\n")
    w["cfg_bits"] = tmp_path / "cfg-bits.yaml"
    return w


EVAL = ["eval", "--model", "{model}", "--no-decode-bench", "--bootstrap", "0"]

# id, argv (formatted with the world), exit code, substrings the message must hold
CASES = [
    # ---- occupied / overlapping outputs of the methods (the input and its neighbours survive)
    ("quantize-out-above-input", ["quantize", "--model", "{model}", "--bits", "8", "--out", "{models}",
                                  "--overwrite"], 2, ["--out", "contains the input", "outside it"]),
    ("quantize-out-is-input", ["quantize", "--model", "{model}", "--out", "{model}", "--overwrite"], 2,
     ["is the input"]),
    ("quantize-out-inside-input", ["quantize", "--model", "{model}", "--out", "{model}/q"], 2,
     ["lies inside the input"]),
    ("quantize-out-user-dir", ["quantize", "--model", "{model}", "--out", "{mine}"], 2,
     ["{mine}", "not written by medslm", "choose another --out"]),
    ("quantize-out-user-dir-overwrite", ["quantize", "--model", "{model}", "--out", "{mine}", "--overwrite"],
     2, ["not written by medslm", "even with --overwrite"]),
    ("quantize-out-is-file", ["quantize", "--model", "{model}", "--out", "{notes}"], 2,
     ["is an existing file", "choose another --out"]),
    ("quantize-out-under-file", ["quantize", "--model", "{model}", "--out", "{notes}/q"], 2,
     ["is a file, not a folder"]),
    ("quantize-out-artifact-no-overwrite", ["quantize", "--model", "{model}", "--out", "{other}"], 2,
     ["already exists", "--overwrite"]),
    ("quantize-bits-out-of-range", ["quantize", "--model", "{model}", "--bits", "3", "--out", "{tmp}/q"], 2,
     ["--bits", "invalid choice: 3", "4, 8"]),
    ("quantize-config-bits", ["quantize", "--model", "{model}", "--config", "{cfg_bits}", "--out", "{tmp}/q"], 2,
     ["bits=3", "4 or 8"]),
    ("quantize-bits-not-a-number", ["quantize", "--model", "{model}", "--bits", "four", "--out", "{tmp}/q"],
     2, ["--bits", "four"]),
    ("quantize-group-size", ["quantize", "--model", "{model}", "--group-size", "100", "--out", "{tmp}/q"], 2,
     ["group_size=100", "power of two"]),
    ("quantize-missing-model", ["quantize", "--model", "{tmp}/nowhere", "--out", "{tmp}/q"], 2,
     ["nowhere", "Presets"]),
    ("quantize-truncated-weights", ["quantize", "--model", "{trunc}", "--out", "{tmp}/q"], 2,
     ["model.safetensors", "truncated", "Restore"]),
    ("quantize-meta-is-list", ["quantize", "--model", "{badmeta}", "--out", "{tmp}/q"], 2,
     ["medslm.json", "JSON list", "rebuild"]),
    ("quantize-meta-not-json", ["quantize", "--model", "{notjson}", "--out", "{tmp}/q"], 2,
     ["medslm.json", "not valid JSON"]),
    ("quantize-config-missing", ["quantize", "--model", "{model}", "--config", "{tmp}/none.yaml", "--out",
                                 "{tmp}/q"], 2, ["--config", "none.yaml"]),
    ("quantize-config-list", ["quantize", "--model", "{model}", "--config", "{cfg_list}", "--out", "{tmp}/q"],
     2, ["--config", "mapping"]),
    ("quantize-config-unknown-key", ["quantize", "--model", "{model}", "--config", "{cfg_unknown}", "--out",
                                     "{tmp}/q"], 2, ["colour", "unknown key"]),
    ("quantize-bits8-without-4", ["quantize", "--model", "{model}", "--asymmetric", "--act-order", "--out",
                                  "{tmp}/q"], 2, ["act_order", "gptq"]),
    ("prune-sparsity", ["prune", "--model", "{model}", "--sparsity", "1.5", "--out", "{tmp}/p"], 2,
     ["sparsity=1.5"]),
    ("prune-pattern", ["prune", "--model", "{model}", "--pattern", "2-4", "--out", "{tmp}/p"], 2,
     ["pattern", "N:M"]),
    ("prune-algorithm", ["prune", "--model", "{model}", "--algorithm", "lottery", "--out", "{tmp}/p"], 2,
     ["algorithm", "lottery"]),
    ("prune-out-above-input", ["prune", "--model", "{model}", "--algorithm", "magnitude", "--out", "{models}",
                               "--overwrite"], 2, ["contains the input"]),
    ("prune-calibration-file-missing", ["prune", "--model", "{model}", "--calibration", "{tmp}/c.txt",
                                        "--out", "{tmp}/p"], 2, ["calibration", "c.txt", "no such file"]),
    ("trim-out-is-input", ["trim", "--model", "{model}", "--out", "{model}", "--overwrite"], 2,
     ["is the input"]),
    ("distill-out-is-teacher", ["distill", "--model", "{model}", "--teacher", "{other}", "--out", "{other}",
                                "--overwrite"], 2, ["is the input {other}"]),
    ("finetune-out-above-input", ["finetune", "--model", "{model}", "--out", "{tmp}", "--overwrite"], 2,
     ["contains the input"]),
    ("merge-not-adapter", ["merge", "--model", "{model}", "--out", "{tmp}/m"], 2, ["not an adapter"]),
    # ---- export
    ("export-out-not-gguf", ["export", "--model", "{model}", "--out", "{tmp}/m.bin"], 2, ["ending in .gguf"]),
    ("export-out-user-file", ["export", "--model", "{model}", "--out", "{mine_gguf}", "--overwrite"], 2,
     ["not written by medslm"]),
    ("export-out-above-input", ["export", "--model", "{model}", "--out", "{models}", "--overwrite"], 2,
     ["ending in .gguf"]),
    ("export-type", ["export", "--model", "{model}", "--out", "{tmp}/m.gguf", "--type", "q9_z"], 2,
     ["--type", "q9_z"]),
    ("export-threads", ["export", "--model", "{model}", "--out", "{tmp}/m.gguf", "--threads", "999"], 2,
     ["--threads", "choose 1 to"]),
    # ---- models
    ("info-truncated", ["models", "info", "{trunc}"], 2, ["model.safetensors", "truncated"]),
    ("info-meta-list", ["models", "info", "{badmeta}"], 2, ["JSON list"]),
    ("info-verify-changed", ["models", "info", "{changed}", "--verify"], 2, ["config.json", "medslm.json records"]),
    ("info-unknown-preset", ["models", "info", "gemma-270m"], 2, ["Did you mean", "gemma3-270m"]),
    # ---- eval: flags out of range, before anything loads
    ("eval-threads-999", EVAL + ["--tasks", "pubmedqa", "--threads", "999"], 2, ["--threads", "choose 1 to"]),
    ("eval-threads-0", EVAL + ["--tasks", "pubmedqa", "--threads", "0"], 2, ["--threads", "choose 1 to"]),
    ("eval-threads-negative", EVAL + ["--tasks", "pubmedqa", "--threads", "-3"], 2, ["--threads"]),
    ("eval-threads-word", EVAL + ["--tasks", "pubmedqa", "--threads", "many"], 2, ["not a whole number"]),
    ("eval-fewshot-negative", EVAL + ["--tasks", "pubmedqa", "--fewshot", "-1"], 2, ["--fewshot", "0 or more"]),
    ("eval-batch-size-0", EVAL + ["--tasks", "pubmedqa", "--batch-size", "0"], 2, ["--batch-size"]),
    ("eval-limit-0", EVAL + ["--tasks", "pubmedqa", "--limit", "0"], 2, ["--limit", "positive"]),
    ("eval-limit-word", EVAL + ["--tasks", "pubmedqa", "--limit", "pubmedqa=x"], 2, ["--limit", "whole numbers"]),
    ("eval-limit-other-task", EVAL + ["--tasks", "pubmedqa", "--limit", "medqa_4options=3"], 2,
     ["--limit", "not in --tasks"]),
    ("eval-unknown-task", EVAL + ["--tasks", "pubmedqaa"], 2, ["unknown task", "pubmedqa"]),
    ("eval-unknown-backend", EVAL + ["--tasks", "pubmedqa", "--backend", "vlm"], 2, ["unknown backend"]),
    ("eval-scoring", EVAL + ["--tasks", "pubmedqa", "--scoring", "fast"], 2, ["--scoring"]),
    ("eval-result-file-two-tasks", EVAL + ["--tasks", "pubmedqa,medmcqa", "--result-file", "{tmp}/r.json"], 2,
     ["--result-file takes one task"]),
    # ---- eval: outputs checked before the model loads (the model path does not even exist here)
    ("eval-output-is-file", ["eval", "--model", "{tmp}/nowhere", "--tasks", "pubmedqa", "--output", "{notes}"],
     2, ["--output", "is an existing file"]),
    ("eval-output-under-file", ["eval", "--model", "{tmp}/nowhere", "--tasks", "pubmedqa", "--output",
                                "{notes}/out"], 2, ["--output", "is a file, not a folder"]),
    ("eval-output-unwritable", ["eval", "--model", "{tmp}/nowhere", "--tasks", "pubmedqa", "--output",
                                "/proc/medslm-results"], 2, ["--output", "cannot write in /proc", "writable"]),
    ("eval-output-inside-model", EVAL + ["--tasks", "pubmedqa", "--output", "{model}/results"], 2,
     ["lies inside the model directory", "outside it"]),
    ("eval-result-file-in-model", EVAL + ["--tasks", "pubmedqa", "--result-file", "{model}/r.json"], 2,
     ["--result-file", "lies inside the model directory"]),
    ("eval-no-task", EVAL + ["--tasks", ","], 2, ["--tasks", "names no task"]),
    ("eval-rag-fewshot", EVAL + ["--tasks", "pubmedqa", "--rag", "{tmp}/ix", "--fewshot", "2"], 2,
     ["--fewshot does not apply to --rag"]),
    ("eval-result-file-user-file", ["eval", "--model", "{tmp}/nowhere", "--tasks", "pubmedqa", "--result-file",
                                    "{notes}"], 2, ["{notes}", "not a medslm result"]),
    ("eval-result-file-is-dir", ["eval", "--model", "{tmp}/nowhere", "--tasks", "pubmedqa", "--result-file",
                                 "{mine}"], 2, ["is an existing folder"]),
    ("eval-split-missing", ["eval", "--model", "{tmp}/nowhere", "--tasks", "medmcqa", "--split", "nonexistent"],
     2, ["nonexistent", "splits here: train, validation", "--split"]),
    ("eval-fewshot-too-many", ["eval", "--model", "{tmp}/nowhere", "--tasks", "medmcqa", "--fewshot", "100000"],
     2, ["--fewshot 100000"]),
    ("eval-data-missing", ["eval", "--model", "{tmp}/nowhere", "--tasks", "pubmedqa", "--data", "{tmp}/void"], 2,
     ["void"]),
    ("eval-bad-record", ["eval", "--model", "{tmp}/nowhere", "--tasks", "medmcqa", "--data", "{badmedmcqa}"], 2,
     ["validation.jsonl", "cop", "--lenient"]),
    ("eval-truncated-model", EVAL[:2] + ["{trunc}"] + EVAL[3:] + ["--tasks", "pubmedqa", "--limit", "2"], 2,
     ["model.safetensors", "truncated"]),
    ("eval-meta-list", EVAL[:2] + ["{badmeta}"] + EVAL[3:] + ["--tasks", "pubmedqa", "--limit", "2"], 2,
     ["JSON list"]),
    # ---- run (recipes): --check rejects what run would reject
    ("run-limit-0", ["run", "{r_limit0}", "--check"], 2, ["limit", "positive number"]),
    ("run-limit-negative", ["run", "{r_limitneg}", "--check"], 2, ["limit=-1"]),
    ("run-limit-dict-0", ["run", "{r_limitdict0}", "--check"], 2, ["limit", "positive number"]),
    ("run-limit-other-task", ["run", "{r_limitother}", "--check"], 2, ["medqa_4options", "not in tasks"]),
    ("run-fewshot-negative", ["run", "{r_fewshot}", "--check"], 2, ["fewshot=-2"]),
    ("run-unknown-key", ["run", "{r_unknown}", "--check"], 2, ["colour", "unknown key"]),
    ("run-bad-step", ["run", "{r_badstep}", "--check"], 2, ["steps.0", "bits"]),
    ("run-not-yaml", ["run", "{r_notyaml}", "--check"], 2, ["not valid YAML"]),
    ("run-missing-recipe", ["run", "{tmp}/none.yaml", "--check"], 2, ["none.yaml", "cannot read"]),
    ("run-output-is-file", ["run", "{r_ok}", "--check", "--output", "{notes}"], 2, ["is an existing file"]),
    ("run-output-user-dir", ["run", "{r_ok}", "--check", "--output", "{mine}"], 2, ["did not write"]),
    ("run-output-under-file", ["run", "{r_ok}", "--output", "{notes}/run"], 2, ["is a file, not a folder"]),
    ("run-threads", ["run", "{r_ok}", "--threads", "999"], 2, ["--threads", "choose 1 to"]),
    # ---- serve, rag, data
    ("serve-threads", ["serve", "--model", "{model}", "--threads", "0"], 2, ["--threads", "choose 1 to"]),
    ("rag-build-user-dir", ["rag", "build", "--sources", "medquad", "--out", "{mine}", "--overwrite"], 2,
     ["not written by medslm"]),
    ("rag-build-out-is-file", ["rag", "build", "--sources", "medquad", "--out", "{notes}"], 2,
     ["is an existing file"]),
    ("data-unknown", ["data", "show", "pubmedq"], 2, ["unknown dataset", "pubmedqa"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, world, capsys):
    _, argv, code, needles = case
    fmt = {k: str(v) for k, v in world.items()}
    argv = [a.format(**fmt) for a in argv]
    before = snapshot(world["tmp"])
    got, out, err = run_cli(argv, capsys)
    assert got == code, (argv, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    msg = err.strip()
    for n in needles:
        assert n.format(**fmt) in msg, (n, msg)
    assert snapshot(world["tmp"]) == before, "a file that existed before changed, vanished or appeared"


def test_table_is_large():
    assert len(CASES) >= 60


# ------------------------------------------------------------------------- the cases that write
def _eval(world, capsys, *extra):
    argv = [a.format(**{k: str(v) for k, v in world.items()}) for a in EVAL + ["--tasks", "pubmedqa"]]
    return run_cli(argv + list(extra), capsys)


def test_rerun_with_other_settings_refuses_then_overwrite_replaces(world, capsys):
    out = world["tmp"] / "res"
    code, _, err = _eval(world, capsys, "--limit", "2", "--output", str(out))
    assert code == 0, err
    (f,) = out.glob("*.json")
    first = f.read_bytes()
    assert json.loads(first)["task"]["limit"] == 2
    code, _, err = _eval(world, capsys, "--limit", "3", "--output", str(out))
    assert code == 2 and "other settings" in err and "limit 2 there, 3 now" in err and "--overwrite" in err
    assert f.read_bytes() == first
    code, _, err = _eval(world, capsys, "--limit", "2", "--output", str(out))  # the same settings: a rerun
    assert code == 0, err
    assert json.loads(f.read_text())["metrics"] == json.loads(first)["metrics"]
    code, _, err = _eval(world, capsys, "--limit", "3", "--output", str(out), "--overwrite")
    assert code == 0, err
    assert json.loads(f.read_text())["task"]["limit"] == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_result_of_another_model_is_not_replaced(world, capsys):
    f = world["tmp"] / "r.json"
    code, _, err = _eval(world, capsys, "--limit", "2", "--result-file", str(f))
    assert code == 0, err
    first = f.read_bytes()
    argv = [a.format(**{k: str(v) for k, v in world.items()}) for a in EVAL + ["--tasks", "pubmedqa"]]
    argv[argv.index(str(world["model"]))] = str(world["other"])
    code, _, err = run_cli(argv + ["--limit", "2", "--result-file", str(f)], capsys)
    assert code == 2 and "other settings" in err and "model" in err and "--overwrite" in err
    assert f.read_bytes() == first


def test_lenient_skips_the_bad_record_it_names(world, capsys):
    bad = world["badmedmcqa"]
    good = json.loads((world["mirror"] / "medmcqa" / "validation.jsonl").read_text().splitlines()[0])
    with open(bad / "validation.jsonl", "a") as f:
        f.write(json.dumps(good) + "\n")
    argv = [a.format(**{k: str(v) for k, v in world.items()}) for a in EVAL + ["--tasks", "medmcqa"]]
    code, out, err = run_cli(argv + ["--data", str(bad), "--lenient"], capsys)
    assert code == 0, err
    assert "medmcqa: skipped 1 bad record(s)" in err and "cop" in err
    row = next(line.split() for line in out.splitlines() if line.startswith("medmcqa"))
    assert row[2] == "1"  # task, split, n: the one good record was evaluated


def test_corrupt_request_cache_is_moved_aside_and_rebuilt(world, capsys):
    cache = world["tmp"] / "requests.sqlite"
    cache.write_bytes(b"this is not a database" * 100)
    junk = cache.read_bytes()
    code, out, err = _eval(world, capsys, "--limit", "2", "--cache", str(cache))
    assert code == 0, err
    assert "damaged" in err and "moved it to" in err
    (aside,) = world["tmp"].glob("requests.sqlite.corrupt-*")
    assert aside.read_bytes() == junk  # kept, byte for byte
    import sqlite3

    n = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert n > 0  # the new cache holds this run's answers


def test_unexpected_error_is_one_message_and_a_log(monkeypatch, capsys, tmp_path):
    import medslm.commands.models as m

    def boom(args):
        raise KeyError("a bug")

    monkeypatch.setattr(m, "cmd_ls", boom)
    code, out, err = run_cli(["models", "ls"], capsys)
    assert code == 1 and "Traceback" not in err and "unexpected error: KeyError" in err
    log = Path(err.split("traceback is in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "a bug" in log.read_text()


def test_two_evals_writing_one_output_and_one_cache_at_once(world):
    """Two processes, the same --output and --cache: both finish, and each result file is whole
    and equals what either run computed alone (SQLite's locking, unique temporary names)."""
    import os
    import subprocess
    import sys

    out, cache = world["tmp"] / "shared-out", world["tmp"] / "shared.sqlite"
    argv = [sys.executable, "-m", "medslm", "eval", "--model", str(world["model"]), "--tasks",
            "pubmedqa,medmcqa", "--no-decode-bench", "--bootstrap", "0", "--output", str(out),
            "--cache", str(cache)]
    env = dict(os.environ, MEDSLM_DATA_DIR=str(world["mirror"]))
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and not [p for p in out.iterdir() if p.name.startswith(".")]
    alone = world["tmp"] / "alone"
    r = subprocess.run(argv[:-4] + ["--output", str(alone), "--cache", str(world["tmp"] / "alone.sqlite")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    for f in files:
        a, b = json.loads(f.read_text()), json.loads((alone / f.name).read_text())
        assert a["metrics"] == b["metrics"] and a["examples"] == b["examples"]
