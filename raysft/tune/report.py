"""A campaign's outputs: tune_summary.json, tune_results.csv, tune_curves.png, best/ and the factor table.

best/ is laid out like a training run's output_dir (adapter/ or model/, spec.yaml, summary.json,
metrics.jsonl, events.jsonl, loss_curve.png), so `raysft eval --model OUT/best` and `raysft export OUT/best`
treat it as one.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import ray.train

from raysft.rundir import WEIGHT_DIRS, RunDir
from raysft.train.outputs import plot_loss_curve
from raysft.train.runlog import read_jsonl

__all__ = ["rank_trials", "export_best", "factor_effects", "format_factor_table", "write_results_csv", "plot_curves"]



def rank_trials(trials: list[dict], metric: str, mode: str) -> list[dict]:
    """Trials sorted best first by `metric` (trials without a score last), each given its `rank` (1 = best)."""
    scored = sorted((t for t in trials if t.get(metric) is not None), key=lambda t: t[metric], reverse=mode == "max")
    ranked = scored + [t for t in trials if t.get(metric) is None]
    for i, t in enumerate(ranked):
        t["rank"] = i + 1 if t.get(metric) is not None else None
    return ranked


def export_best(trial: dict, outcome: dict, dest: Path) -> Path:
    """Write the best trial's best checkpoint and run records into `dest` (replaced), as a run output_dir.

    Args:
        trial: the trial's summary entry ({id, config, dir, ...}).
        outcome: its `trial_outcome` (the best checkpoint's event data under "best").
        dest: the directory to write (OUT/best).
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with ray.train.Checkpoint(outcome["best"]["uri"]).as_directory() as ckpt:
        for name in WEIGHT_DIRS:
            if (Path(ckpt) / name).exists():
                shutil.copytree(Path(ckpt) / name, dest / name)
    src, run = RunDir(trial["dir"]), RunDir(dest)
    for kept, copy in zip(src.records, run.records):
        if kept.exists():
            shutil.copy2(kept, copy)
    metrics = read_jsonl(run.metrics_file)
    if not run.loss_curve.exists():  # a trial ASHA stopped never wrote its own
        plot_loss_curve(metrics, run.loss_curve)
    best = outcome["best"]
    summary = dict(outcome["summary"] or {  # a stopped trial wrote none: the same keys, from its records
        "method": run.saved_spec().model.method, "final": {}, "steps": outcome["steps"],
        "early_stopped": True, "trained_tokens": sum(m.get("trained_tokens", 0) for m in metrics if "train_loss" in m),
    })
    summary.update({
        "output_dir": str(dest),
        "adapter": str(run.adapter) if run.adapter.exists() else None,
        "best": {k: v for k, v in best.items() if k in ("step", "epoch", "eval_loss", "eval_token_accuracy", "exact_match")},
        "exact_match": best.get("exact_match"),
        "checkpoint": best["uri"],
        "trial": trial["id"],
        "config": trial["config"],
        "stopped_by": trial["stopped_by"],
    })
    run.summary_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return dest


def factor_effects(trials: list[dict], base_config: dict, metric: str) -> list[dict]:
    """one_at_a_time: per key, the metric at each of its values with every other key at base.

    Returns:
        [{"key", "effect" (max - min of the metric over the key's values, base included), "rows":
        [{"value", "trial", metric, "delta" (vs the base trial)}]}], largest effect first.
    """
    base = next((t for t in trials if t["config"] == base_config), None)
    base_score = base.get(metric) if base else None
    factors = []
    for key in base_config:
        rows = []
        for t in trials:
            others_at_base = all(t["config"].get(k) == v for k, v in base_config.items() if k != key)
            if others_at_base:
                score = t.get(metric)
                delta = score - base_score if score is not None and base_score is not None else None
                rows.append({"value": t["config"].get(key), "trial": t["id"], metric: score, "delta": delta,
                             "base": t is base})
        scores = [r[metric] for r in rows if r[metric] is not None]
        factors.append({"key": key, "effect": max(scores) - min(scores) if len(scores) > 1 else 0.0, "rows": rows})
    return sorted(factors, key=lambda f: f["effect"], reverse=True)


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_factor_table(factors: list[dict], metric: str) -> str:
    """The factor table as text: one block per key, its values' metric and change against the base trial."""
    lines = [f"{'factor':<28} {'value':>12} {metric:>12} {'vs base':>10}  trial"]
    for f in factors:
        for r in f["rows"]:
            delta = "(base)" if r["base"] else (_num(r["delta"]) if r["delta"] is None else f"{r['delta']:+.4g}")
            lines.append(f"{f['key']:<28} {_num(r['value']):>12} {_num(r[metric]):>12} {delta:>10}  {r['trial']}")
        lines.append(f"{'':<28} {'effect':>12} {_num(f['effect']):>12}")
    return "\n".join(lines)


def write_results_csv(trials: list[dict], keys: list[str], metric: str, path: Path) -> None:
    """One row per trial, best first: rank, id, status, steps, metric, then the searched keys."""
    columns = ["rank", "trial", "status", "stopped_by", "steps", metric, "best_step", "checkpoints_kept"]
    columns += [c for c in ("eval_loss", "exact_match") if c != metric]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns + keys)
        for t in trials:
            row = {**t, "trial": t["id"]}
            writer.writerow([row.get(c) for c in columns] + [json.dumps(t["config"].get(k)) if isinstance(
                t["config"].get(k), (dict, list)) else t["config"].get(k) for k in keys])


def plot_curves(trials: list[dict], evals: dict[str, list[dict]], metric: str, path: Path) -> None:
    """Each trial's eval metric against step; trials ASHA stopped are dashed and end in an x, the best is thick."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for t in trials:
        points = [(m["step"], m[metric]) for m in evals.get(t["id"], [])]
        if not points:
            continue
        stopped = t["stopped_by"] == "asha"
        line, = ax.plot(*zip(*points), "--" if stopped else "-", marker="o", markersize=3,
                        linewidth=2.5 if t.get("rank") == 1 else 1.2, label=f"{t['id']} (#{t['rank'] or '-'})")
        if stopped:
            ax.plot(*points[-1], "x", color=line.get_color(), markersize=10, markeredgewidth=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (dashed, x: stopped by ASHA)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
