"""The run's human-facing outputs: summary.json and loss_curve.png, written by the driver after training."""

from __future__ import annotations

import json
from pathlib import Path

from raysft.config import JobSpec
from raysft.rundir import RunDir
from raysft.train.runlog import read_jsonl

__all__ = ["write_outputs", "plot_loss_curve"]


def plot_loss_curve(metrics: list[dict], path: Path) -> None:
    """Train and eval loss against step."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    train = [(m["step"], m["train_loss"]) for m in metrics if "train_loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per trained token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out: Path, spec: JobSpec, data, final: dict, best_metrics: dict, wall_time_s: float) -> dict:
    """Write summary.json and loss_curve.png into `out`; returns the summary."""
    run = RunDir(out)
    metrics = read_jsonl(run.metrics_file)
    plot_loss_curve(metrics, run.loss_curve)
    evals = [m for m in metrics if "eval_loss" in m or "exact_match" in m]
    steps = [m for m in metrics if "train_loss" in m]
    summary = {
        "output_dir": str(out),
        "adapter": str(run.adapter) if run.adapter.exists() else None,
        "method": spec.model.method,
        "best": {k: v for k, v in best_metrics.items() if k in ("step", "epoch", "eval_loss", "eval_token_accuracy", "exact_match")},
        "final": {**(steps[-1] if steps else {}), **(evals[-1] if evals else {})},
        "exact_match": best_metrics.get("exact_match"),
        "steps": final.get("step"),
        "early_stopped": bool(final.get("early_stopped")),
        "trained_tokens": final.get("trained_tokens"),
        "data": {"composition": data.composition, "encoding": data.encoding, "skipped_invalid": data.skipped_invalid,
                 "template_date": data.template_date},
        "wall_time_s": round(wall_time_s, 2),
    }
    run.summary_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary
