"""The trade-off report: results/*.json -> leaderboard.json, report.md, report.html.

The HTML is self-contained (styles and SVG plots inline; no network). Plots: for each accuracy
task, accuracy vs bytes on disk and vs decode tokens/s, 95% CI error bars, every point labelled
with its variant and step chain, the Pareto front (no other model both better and cheaper) drawn,
and for accuracy the chance and majority-class lines of the items evaluated. Every model is compared
with the base on the same items (``medslm.evaluate.paired``: exact McNemar for accuracy, a paired
bootstrap CI of the difference otherwise), and the report says in words which differences are
significant and which are within noise.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any

from medslm.errors import MedslmError


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    files = sorted(Path(results_dir).glob("*.json"))
    out = []
    for f in files:
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise MedslmError(f"{f}: not valid JSON ({e}); delete it and rerun the evaluation") from e
        if "metrics" in r and "task" in r:
            out.append(r)
    if not out:
        raise MedslmError(f"{results_dir}: no result files (*.json from medslm eval)")
    return out


def rows(results: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per model (label or model path), with each task's primary metric and CI."""
    by: dict[str, dict] = {}
    tasks: list[str] = []
    for r in results:
        m = r["model"]
        label = m.get("label") or m.get("model")
        row = by.setdefault(label, {"label": label, "chain": m.get("chain", "base"), "hash": m.get("hash"),
                                    "bytes": m.get("bytes"), "parameters": m.get("parameters"),
                                    "peak_rss_bytes": 0, "decode_tok_s": None, "metrics": {},
                                    "eval_wh": None, "eval_tokens": 0, "wh_per_1k_tokens": None,
                                    "overlap_allowed": m.get("overlap_allowed", False)})
        t = r["task"]["name"]
        if t not in tasks:
            tasks.append(t)
        prim = r["task"]["primary"]
        row["metrics"][t] = {"metric": prim, **r["metrics"][prim]}
        eff = r["efficiency"]
        row["peak_rss_bytes"] = max(row["peak_rss_bytes"], eff.get("peak_rss_bytes") or 0)
        if eff.get("decode_tok_s"):
            row["decode_tok_s"] = eff["decode_tok_s"]
        en = r.get("energy") or {}
        if en.get("wh") is not None:  # energy of the requests computed when each result was made
            row["eval_wh"] = (row["eval_wh"] or 0.0) + en["wh"]
            row["eval_tokens"] += en.get("tokens") or 0
            if row["eval_tokens"]:
                row["wh_per_1k_tokens"] = 1000 * row["eval_wh"] / row["eval_tokens"]
            row["energy_method"] = en.get("method")
    order = sorted(by.values(), key=lambda x: (-(x["bytes"] or 0), x["label"] != "base"))
    # grouped by the survey's task family (question answering first, perplexity last), in the order met
    tasks.sort(key=lambda t: _group_rank(group_of(results, t)))
    return order, tasks


def group_of(results: list[dict], task: str) -> str:
    r = next(r for r in results if r["task"]["name"] == task)
    if r["task"].get("group"):
        return r["task"]["group"]
    from medslm.tasks.spec import GROUP_OF_FAMILY  # results written before groups were recorded

    fam = r["task"]["family"]
    return GROUP_OF_FAMILY.get(fam.removesuffix("_cot"), fam)


def _group_rank(g: str) -> int:
    from medslm.tasks.spec import GROUPS

    return GROUPS.index(g) if g in GROUPS else len(GROUPS)


def _fmt(m: dict | None) -> str:
    if not m:
        return ""
    v, ci = m["value"], m.get("ci95")
    if m["metric"] in ("acc", "acc_norm", "macro_f1"):
        s = f"{100 * v:.1f}"
        return s + (f" ± {100 * (ci[1] - ci[0]) / 2:.1f}" if ci else "")
    s = f"{v:.3f}" if v < 100 else f"{v:.1f}"
    return s + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _mib(b) -> str:
    if not b:
        return ""
    m = b / 2**20
    return f"{m:.0f}" if m >= 100 else f"{m:.2f}" if m < 1 else f"{m:.1f}"


def table(rws: list[dict], tasks: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "steps"] + [f"{t} ({rws[0]['metrics'].get(t, {}).get('metric', '')})" for t in tasks] + [
        "MiB on disk", "peak RSS MiB", "decode tok/s", "eval Wh", "Wh/1k tok"]
    body = [[r["label"], r["chain"]] + [_fmt(r["metrics"].get(t)) for t in tasks] +
            [_mib(r["bytes"]), _mib(r["peak_rss_bytes"]), f"{r['decode_tok_s']:.1f}" if r["decode_tok_s"] else "",
             f"{r['eval_wh']:.3g}" if r.get("eval_wh") is not None else "",
             f"{r['wh_per_1k_tokens']:.3g}" if r.get("wh_per_1k_tokens") else ""]
            for r in rws]
    return head, body


def pareto(points: list[tuple[float, float]], higher_x_better: bool) -> list[int]:
    """Indices of points no other point beats on both quality (y, higher is better) and cost (x)."""
    out = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (y2 >= y and (x2 >= x if higher_x_better else x2 <= x)) and (y2 > y or x2 != x)
            for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            out.append(i)
    return out


def baselines(results: list[dict], task: str) -> dict[str, float]:
    """Chance (1 / options) and majority-class accuracy of the items a task's results were scored on."""
    from collections import Counter

    for r in results:
        ex = r.get("examples") or []
        if r["task"]["name"] != task or not ex or "gold" not in ex[0]:
            continue
        golds = [e["gold"] for e in ex]
        out = {"majority": Counter(golds).most_common(1)[0][1] / len(golds)}
        if ex[0].get("probs"):
            out["chance"] = 1 / len(ex[0]["probs"])
        return out
    return {}


def paired_rows(results: list[dict], rws: list[dict], tasks: list[str]) -> list[dict]:
    """Each model against the base (the row labelled base, else the first) on each task."""
    from medslm.evaluate.paired import compare

    base = next((r["label"] for r in rws if r["label"] == "base"), rws[0]["label"] if rws else None)
    by = {((r["model"].get("label") or r["model"].get("model")), r["task"]["name"]): r for r in results}
    out = []
    for t in tasks:
        agg = _aggregate(t)
        for r in rws:
            if r["label"] == base or (base, t) not in by or (r["label"], t) not in by:
                continue
            c = compare(by[(base, t)], by[(r["label"], t)], agg)
            out.append({"model": r["label"], "task": t, **c, "against": base})
    return out


def _aggregate(task: str):
    try:
        from medslm.tasks import get_task

        return get_task(task).aggregate
    except Exception:  # a result of a task this medslm no longer has: compared on 0/1 metrics only
        return None


XLABEL = {"bytes": "size on disk (MiB)", "decode_tok_s": "decode tokens/s",
          "wh_per_1k_tokens": "evaluation energy (Wh per 1,000 tokens)"}
XTITLE = {"bytes": "size", "decode_tok_s": "decode speed", "wh_per_1k_tokens": "energy"}


def plot_svg(rws: list[dict], task: str, xkey: str, lines: dict[str, float] | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r, r["metrics"][task]) for r in rws if task in r["metrics"] and r.get(xkey)]
    if not pts:
        return ""
    metric = pts[0][1]["metric"]
    scale = 100 if metric in ("acc", "acc_norm", "macro_f1") else 1
    xs = [r[xkey] / 2**20 if xkey == "bytes" else r[xkey] for r, _ in pts]
    ys = [m["value"] * scale for _, m in pts]
    lo = [(m["value"] - m["ci95"][0]) * scale if m.get("ci95") else 0 for _, m in pts]
    hi = [(m["ci95"][1] - m["value"]) * scale if m.get("ci95") else 0 for _, m in pts]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color="#1f6feb", ecolor="#8fb3f0", capsize=4, ms=7)
    if scale == 100:
        for name, v, style in (("chance", (lines or {}).get("chance"), ":"),
                               ("majority class", (lines or {}).get("majority"), "-.")):
            if v is not None:
                ax.axhline(100 * v, ls=style, color="#6e7781", lw=1, label=f"{name} ({100 * v:.0f}%)")
    lower_better = metric.endswith("perplexity") or metric in ("bits_per_byte", "ece")
    front = pareto([(x, -y if lower_better else y) for x, y in zip(xs, ys)], higher_x_better=(xkey == "decode_tok_s"))
    if len(front) > 1:
        fx, fy = zip(*sorted((xs[i], ys[i]) for i in front))
        ax.plot(fx, fy, "--", color="#d9480f", lw=1.2, label="Pareto front")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    for (r, _), x, y in zip(pts, xs, ys):
        text = r["label"] if r["chain"] in ("base", r["label"]) else f"{r['label']}\n{r['chain']}"
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 6),
                    fontsize=7)
    ax.set_xlabel(XLABEL[xkey])
    ylab = {"acc": "accuracy (%)", "macro_f1": "macro-F1 (%)"}.get(metric, metric)
    ax.set_ylabel(f"{task} {ylab}")
    if lower_better:
        ax.invert_yaxis()  # keep "up" = better
    ax.grid(alpha=0.3)
    ax.set_title(f"{task}: {'accuracy' if scale == 100 else metric} vs {XTITLE[xkey]}", fontsize=10)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _paired_html(paired: list[dict]) -> str:
    if not paired:
        return ""
    esc = html.escape
    items = "".join(f"<li><b>{esc(c['model'])}</b>, {esc(c['task'])}: {esc(c['words'])}</li>" for c in paired)
    return (f"<h2>Against {esc(paired[0]['against'])}, item by item</h2><p class=\"note\">Exact McNemar test for "
            "accuracy, paired bootstrap 95% CI of the difference otherwise.</p><ul>" + items + "</ul>")


def _group_cells(tasks: list[str], groups: dict[str, str]) -> str:
    """One header cell per run of tasks in the same family."""
    cells, i = [], 0
    while i < len(tasks):
        j = i
        while j + 1 < len(tasks) and groups[tasks[j + 1]] == groups[tasks[i]]:
            j += 1
        cells.append(f'<th colspan="{j - i + 1}">{html.escape(groups[tasks[i]])}</th>')
        i = j + 1
    return "".join(cells)


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1b1f24}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
th:first-child,td:first-child,td:nth-child(2){text-align:left}th{background:#f6f8fa}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;width:540px}.plots svg{width:540px;height:auto}
.note{color:#57606a;font-size:12px}"""


def build_report(results_dir: str | Path, out: str | Path | None = None,
                 task_order: list[str] | None = None, model_order: list[str] | None = None,
                 held_out: list[str] | None = None) -> dict[str, str]:
    """``model_order`` (a recipe's variants): the report shows those, in that order; results an
    earlier version of the recipe left in the folder (a renamed or removed variant) stay on disk,
    counted in the report, not shown as rows. ``held_out``: the recipe's held-out check
    (:mod:`medslm.held_out`), one line per compression step that may read evaluated records."""
    results_dir = Path(results_dir)
    out = Path(out or (results_dir.parent if results_dir.name == "results" else results_dir))
    results = load_results(results_dir)
    left_out = 0
    if model_order:
        keep = [r for r in results if (r["model"].get("label") or r["model"].get("model")) in model_order]
        left_out = len(results) - len(keep)
        if not keep:
            raise MedslmError(f"{results_dir}: no results of the recipe's variants {model_order}")
        results = keep
    rws, tasks = rows(results)
    if model_order:  # a recipe's variants in its own order
        rws.sort(key=lambda r: model_order.index(r["label"]))
    if task_order:  # a recipe's order within each task family
        tasks.sort(key=lambda t: (_group_rank(group_of(results, t)), task_order.index(t) if t in task_order else 99))
    groups = {t: group_of(results, t) for t in tasks}
    head, body = table(rws, tasks)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    hw = results[0]["efficiency"]
    hardware = f"{hw.get('cpu') or hw.get('gpu')}, {hw.get('threads')} threads"
    paired = paired_rows(results, rws, tasks)
    lb = {"schema_version": 1, "created": created, "hardware": hardware, "tasks": tasks, "groups": groups,
          "models": rws,
          "paired": paired, "sources": sorted(r.get("path", "") for r in results)}
    if held_out is not None:
        lb["held_out_check"] = held_out
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(lb, indent=1, default=float) + "\n")
    fam_row = ["task family", ""] + [groups[t] for t in tasks] + ["", "", "", "", ""]
    others = (f" ({left_out} result files in {results_dir} of variants not in the recipe are not shown)"
              if left_out else "")
    md = ["# medslm report", "", f"{len(rws)} models x {len(tasks)} tasks; {hardware}; {created}{others}", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(fam_row) + " |"]
    md += ["| " + " | ".join(row) + " |" for row in body]
    md += ["", "Accuracy in % ± half the 95% bootstrap CI; perplexity with its CI. Reproduce from the "
           "result JSONs (task and prompt version, seed, artifact hash, package versions)."]
    methods = sorted({r["energy_method"] for r in rws if r.get("energy_method")})
    if methods:
        md += ["", "Energy: the evaluation's own requests (cached ones cost nothing again), " + "; ".join(methods)
               + ". Carbon (gCO2e, with the grid intensity used) is in each result's `energy`."]
    if paired:
        md += ["", f"## Against {paired[0]['against']}, item by item", "",
               "Exact McNemar test for accuracy, paired bootstrap 95% CI of the difference otherwise; "
               "significant at p < 0.05 / a CI excluding 0.", ""]
        md += [f"- {c['model']}, {c['task']}: {c['words']}" for c in paired]
    if any(r["overlap_allowed"] for r in rws):
        md.append("WARNING: some models were trained with --allow-overlap (test contamination possible).")
    if held_out is not None:
        md += ["", "## Held-out check", "", "Compression steps (calibration, distillation corpus, trimmed "
               "vocabulary) against the records this evaluation scores, by record id: "
               + ("none reads one." if not held_out else f"{len(held_out)} may read some.")]
        md += [f"- {line}" for line in held_out]
    (out / "report.md").write_text("\n".join(md) + "\n")
    plots = []
    for t in tasks:
        lines = baselines(results, t)
        for xkey in ("bytes", "decode_tok_s", "wh_per_1k_tokens"):
            svg = plot_svg(rws, t, xkey, lines)
            if svg:
                plots.append(f"<figure>{svg}</figure>")
    esc = html.escape
    rows_html = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>medslm report</title>
<style>{CSS}</style></head><body><h1>medslm trade-off report</h1>
<p>{len(rws)} models × {len(tasks)} tasks · {esc(hardware)} · {esc(created)}</p>
<table><thead><tr><th colspan="2">task family</th>{_group_cells(tasks, groups)}<th colspan="5"></th></tr>
<tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr></thead><tbody>{rows_html}</tbody></table>
<p class="note">Accuracy in % ± half the 95% bootstrap CI. Dashed line: Pareto front. Every number traces
to a result JSON in {esc(str(results_dir))} (task and prompt version, seed, artifact hash, packages).</p>
{('<p class="note">Energy: ' + esc('; '.join(methods)) + '.</p>') if methods else ''}
{_paired_html(paired)}
{_held_out_html(held_out)}
<div class="plots">{''.join(plots)}</div></body></html>"""
    (out / "report.html").write_text(page)
    return {"html": str(out / "report.html"), "md": str(out / "report.md"),
            "leaderboard": str(out / "leaderboard.json"), "table": "\n".join(md[4:4 + len(body) + 3])}


def _held_out_html(held_out: list[str] | None) -> str:
    if held_out is None:
        return ""
    if not held_out:
        return '<p class="note">Held-out check: no compression step reads a record this evaluation scores.</p>'
    items = "".join(f"<li>{html.escape(x)}</li>" for x in held_out)
    return f'<p class="note">Held-out check: these steps may read records this evaluation scores:</p><ul>{items}</ul>'

