"""ASHA against the full grid on one search space: training steps used and the best eval loss each finds.

Run: python benchmarks/bench_tune.py [--full]   (prints one JSON object)

Both campaigns search the same grid (learning rate × LoRA rank) on a small random-weight model and the ticket
data, 2 trials at a time on 2 CPUs. `grid` runs every trial to its end (scheduler none); `asha` stops weak
trials at rungs of 2, 4, 8, ... steps (reduction factor 2). `steps_total` counts the optimizer steps the
trials actually ran (from their metrics.jsonl); a stopped trial runs a few steps past ASHA's decision before
Tune kills it, and those count too. Uses RAY_ADDRESS when set, else starts a private 2-CPU Ray head with a
dashboard (`raysft serve`'s embedded cluster: Ray Train needs the State API to free a stopped trial's placement group).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raysft` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysft.local_ray import use_token_auth
from raysft.local_ray.cluster import LocalRayCluster

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]
_TRAIN = str(_REPO / "examples/data/tickets_train.jsonl")


@contextlib.contextmanager
def _ray_cluster(log_dir: Path):
    """Connect to RAY_ADDRESS, or to a private 2-CPU head this function starts and stops."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], configure_logging=False, log_to_driver=False)
        yield
        ray.shutdown()
        return
    cluster = LocalRayCluster(log_dir / "cluster.json", num_cpus=2, num_gpus=0)
    cluster.start()
    try:
        ray.init(address=cluster.gcs_address, configure_logging=False, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        cluster.stop(grace_s=90)


def _campaign(base: str, out: Path, scheduler: str, lrs: list[float], ranks: list[int], steps: int) -> dict:
    from raysft.config import load_spec
    from raysft.tune.campaign import run_campaign

    raw = {
        "model": {"name_or_path": base, "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [_TRAIN], "validation_split": 0.1, "max_seq_len": 256},
        "train": {"max_steps": steps, "micro_batch_size": 4, "global_batch_size": 8, "warmup_ratio": 0.0},
        "eval": {"every_steps": 2},
        "checkpoint": {"keep_last": 1},
        "output_dir": str(out),
        "tune": {"search_space": {"train.learning_rate": {"grid": lrs}, "model.lora.rank": {"grid": ranks}},
                 "search": "grid", "scheduler": scheduler, "max_concurrent_trials": 2,
                 "grace_period_steps": 2, "reduction_factor": 2},
    }
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the live table
        summary = run_campaign(load_spec(raw))
    best = summary["best"]
    return {
        "trials": summary["num_trials"],
        "steps_total": summary["steps_total"],
        "steps_if_all_ran": steps * summary["num_trials"],
        "stopped_by_asha": sum(t["stopped_by"] == "asha" for t in summary["trials"]),
        "best_eval_loss": round(best["eval_loss"], 4),
        "best_config": best["config"],
        "best_step": best["step"],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def run(quick: bool = True) -> dict:
    """Run the full-grid and the ASHA campaign on one search space and return both measurements.

    Args:
        quick: 4 learning rates × 2 ranks, 24 steps per trial (about 10 minutes on 2 CPUs); otherwise
            5 × 3 and 48 steps.

    Returns:
        {"space": ..., "grid": {...}, "asha": {...}, "steps_saved": fraction of the grid's steps ASHA did not run,
        "best_eval_loss_gap": ASHA's best minus the grid's best; 0 or more, since ASHA runs a subset of the grid's
        (deterministic) evaluations}.
    """
    from raysft.model.tiny import init_tiny

    lrs = [1e-5, 1e-4, 1e-3, 3e-3] if quick else [1e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    ranks = [4, 16] if quick else [4, 8, 16]
    # Asynchronous halving compares each trial with those that reached a rung before it: a grid listed from
    # worst to best (ascending learning rates here) sets a low bar and stops little. A fixed shuffle (the same
    # for both campaigns) stands for a space whose good region is unknown.
    random.Random(0).shuffle(lrs)
    random.Random(1).shuffle(ranks)
    steps = 24 if quick else 48
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 128 wide, 2 layers: a step costs enough (~0.1 s on a CPU) that ASHA's decisions, which reach a trial
        # about a second after its evaluation, land while it still trains, as they do on real models.
        base = str(init_tiny(root / "base", _TRAIN, vocab_size=1024, hidden_size=128, layers=2))
        with _ray_cluster(root):
            grid = _campaign(base, root / "grid", "none", lrs, ranks, steps)
            asha = _campaign(base, root / "asha", "asha", lrs, ranks, steps)
    return {
        "space": {"train.learning_rate": lrs, "model.lora.rank": ranks, "steps_per_trial": steps},
        "grid": grid,
        "asha": asha,
        "steps_saved": round(1 - asha["steps_total"] / grid["steps_total"], 3),
        "best_eval_loss_gap": round(asha["best_eval_loss"] - grid["best_eval_loss"], 4),
    }


if __name__ == "__main__":
    use_token_auth()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the larger grid and longer trials")
    print(json.dumps(run(quick=not parser.parse_args().full), indent=2))
