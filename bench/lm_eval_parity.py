"""Parity and speed: medslm eval vs lm-evaluation-harness on the same data and model directory.

Writes the mirror's PubMedQA and MedMCQA records as JSONL, runs lm-evaluation-harness (its ``hf``
model, task YAMLs with ``dataset_path: json``; lm_eval is not a medslm dependency: pass the Python
of an environment that has it with ``--lm-eval-python``) and medslm's ``hf`` backend, then prints
per-example agreement of predictions, both accuracies, both wall times and their ratio, and the
max |delta loglik|. Ends with one JSON line.

    pip install "lm_eval[hf]"   # in some environment
    MEDSLM_DATA_DIR=../shared/data python bench/lm_eval_parity.py --limit 100 \
        --lm-eval-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PROMPTS = {  # lm-eval's prompts for these tasks, as Jinja over the JSONL fields the bench writes
    "pubmedqa": ("Abstract: {{context}}\\nQuestion: {{question}}\\nAnswer:", ["yes", "no", "maybe"]),
    "medmcqa": ("Question: {{question}}\\nChoices:\\nA. {{opa}}\\nB. {{opb}}\\nC. {{opc}}\\n"
                "D. {{opd}}\\nAnswer:", ["A", "B", "C", "D"]),
}


def task_yaml(task: str, data_file: Path) -> str:
    text, choices = PROMPTS[task]
    return "\n".join([
        f"task: parity_{task}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
        f"    test: {data_file}", "test_split: test", "output_type: multiple_choice",
        f'doc_to_text: "{text}"', f"doc_to_choice: {json.dumps(choices)}", "doc_to_target: answer",
        "metric_list:", "  - metric: acc", "  - metric: acc_norm", ""])


LM_EVAL_SCRIPT = """
import json, sys, time
import lm_eval
from lm_eval.tasks import TaskManager
model_dir, yaml_dir, tasks, bs, threads = sys.argv[1:6]
import torch; torch.set_num_threads(int(threads))
from lm_eval.models.huggingface import HFLM
lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=int(bs), device="cpu")
t = time.perf_counter()  # like medslm's timing: after the model is loaded
out = lm_eval.simple_evaluate(model=lm, tasks=tasks.split(","),
                              task_manager=TaskManager(include_path=yaml_dir), log_samples=True)
wall = time.perf_counter() - t
res = {}
for task, samples in out["samples"].items():
    rows = sorted(samples, key=lambda s: s["doc_id"])
    res[task] = {"acc": out["results"][task]["acc,none"],
                 "lls": [[float(r[0]) for r in s["filtered_resps"]] for s in rows]}
print("@@" + json.dumps({"wall": wall, "tasks": res}))
"""


def write_data(task: str, examples, out: Path) -> Path:
    f = out / f"{task}.jsonl"
    with open(f, "w") as fh:
        for e in examples:
            if task == "pubmedqa":
                rec = {"context": e.context, "question": e.question, "answer": e.answer}
            else:
                rec = {"question": e.question, "opa": e.options[0], "opb": e.options[1],
                       "opc": e.options[2], "opd": e.options[3], "answer": e.answer}
            fh.write(json.dumps(rec) + "\n")
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--tasks", default="pubmedqa,medmcqa")
    ap.add_argument("--limit", type=int, default=None, help="first N records of each dataset")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm-eval-python", default=sys.executable)
    a = ap.parse_args()

    from medslm.backends.hf import HFBackend
    from medslm.evaluate.runner import evaluate
    from medslm.models.loading import resolve
    from medslm.tasks import get_task

    model_dir = resolve(a.model).artifact().path
    tmp = Path(tempfile.mkdtemp(prefix="parity-"))
    tasks = a.tasks.split(",")
    exs = {}
    for t in tasks:
        task = get_task(t)
        ex = task.examples()
        exs[t] = ex[: a.limit] if a.limit else ex
        write_data(t, exs[t], tmp)
        (tmp / f"{t}.yaml").write_text(task_yaml(t, tmp / f"{t}.jsonl"))

    lm = {"tasks": {}, "wall": {}}
    for t in tasks:  # one lm_eval call per task, so each wall time is its own
        cmd = [a.lm_eval_python, "-c", LM_EVAL_SCRIPT, str(model_dir), str(tmp), f"parity_{t}",
               str(a.batch_size), str(a.threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit("lm_eval failed:\n" + p.stderr[-3000:])
        out = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("@@"))[2:])
        lm["tasks"].update(out["tasks"])
        lm["wall"][t] = out["wall"]

    be = HFBackend(str(model_dir), batch_size=a.batch_size, threads=a.threads)
    summary = {"bench": "lm_eval_parity", "model": a.model, "tasks": {}}
    print(f"model {a.model} ({model_dir.name}), threads {a.threads}, batch {a.batch_size}")
    for t in tasks:
        task = get_task(t)
        task.examples = (lambda ex: (lambda *args, **kw: ex))(exs[t])
        t1 = time.perf_counter()
        res = evaluate(be, [task], bootstrap=0, measure_decode=False, progress=False,
                       cache_path=tmp / "medslm-cache.sqlite")[0]
        ms_wall = time.perf_counter() - t1
        ours = res["examples"]
        theirs = lm["tasks"][f"parity_{t}"]["lls"]
        agree = sum(int(o["pred"] == max(range(len(l)), key=l.__getitem__)) for o, l in zip(ours, theirs))
        diff = max(abs(x - y) for o, l in zip(ours, theirs) for x, y in zip(o["loglik"], l))
        acc_ms = res["metrics"]["acc"]["value"]
        acc_lm = lm["tasks"][f"parity_{t}"]["acc"]
        lm_wall = lm["wall"][t]
        print(textwrap.dedent(f"""\
            {t}: n={len(ours)}
              agreement  {agree}/{len(ours)} = {100 * agree / len(ours):.2f}%
              accuracy   medslm {100 * acc_ms:.2f}   lm-eval {100 * acc_lm:.2f}   diff {100 * (acc_ms - acc_lm):+.2f} pts
              max |d loglik| {diff:.2e}
              wall       medslm {ms_wall:.1f} s   lm-eval {lm_wall:.1f} s   ratio {lm_wall / ms_wall:.2f}x"""))
        summary["tasks"][t] = {"n": len(ours), "agreement": agree / len(ours), "acc_medslm": acc_ms,
                               "acc_lm_eval": acc_lm, "max_abs_dll": diff, "medslm_s": round(ms_wall, 2),
                               "lm_eval_s": round(lm_wall, 2), "speedup": round(lm_wall / ms_wall, 2)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
