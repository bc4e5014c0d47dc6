"""One trial's outcome as its training run left it on disk: steps run, checkpoints kept, its best evaluation.

Each trial is an ordinary training run in `trials/<id>/`; its Ray Train checkpoints live in
`<checkpoint storage>/checkpoints/` (the trial directory unless checkpoint.storage_path is set). A trial that
ASHA stops is killed mid-run, which can leave a checkpoint directory Ray Train never registered (uploaded,
but not yet counted against keep_last); `prune_checkpoints` removes those so retention holds for every trial.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs

from raysft.rundir import RunDir
from raysft.train.runlog import read_jsonl

__all__ = ["checkpoint_dir", "checkpoint_names", "prune_checkpoints", "trial_outcome"]

# Ray Train's record of the checkpoints it registered for a run (what it resumes from and prunes by).
_SNAPSHOT = "checkpoint_manager_snapshot.json"


def checkpoint_dir(out: Path, trial_id: str, storage_path: str | None) -> str:
    """Where a trial's Ray Train run keeps its checkpoints (a local path or a storage URI)."""
    root = f"{storage_path.rstrip('/')}/trials/{trial_id}" if storage_path else str(out / "trials" / trial_id)
    return f"{root}/checkpoints"


def _fs(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in uri:
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), str(Path(uri).resolve())


def checkpoint_names(run_dir: str) -> list[str]:
    """Names of the checkpoint directories on storage ([] when the run saved none)."""
    fs, root = _fs(run_dir)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return sorted(Path(i.path).name for i in infos
                  if i.type == pyarrow.fs.FileType.Directory and Path(i.path).name.startswith("checkpoint_"))


def prune_checkpoints(run_dir: str) -> list[str]:
    """Delete checkpoint directories that Ray Train did not register; returns the names kept.

    Only call it for a run that is not running: a directory being uploaded is not registered yet.
    """
    fs, root = _fs(run_dir)
    names = checkpoint_names(run_dir)
    try:
        with fs.open_input_stream(f"{root}/{_SNAPSHOT}") as f:
            snapshot = json.loads(f.read())
        registered = {r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]}
    except FileNotFoundError:
        registered = set()  # killed before its first checkpoint was registered: a resume starts from scratch
    except (KeyError, TypeError, ValueError):
        return names  # a snapshot layout this code does not know: keep everything rather than guess
    for name in names:
        if name not in registered:
            fs.delete_dir(f"{root}/{name}")
    return [n for n in names if n in registered]


def trial_outcome(trial_dir: Path, run_dir: str, metric: str, mode: str) -> dict:
    """What a trial's training run left: steps, kept checkpoints, and its best evaluation among them.

    A trial is scored by its best evaluation whose checkpoint is still kept, so the score always names an
    adapter that exists (Ray Train keeps the best checkpoints by this same metric).

    Returns:
        {"steps": optimizer steps run, "checkpoints_kept": int, "best": the checkpoint_saved event data
        ({step, uri, eval_loss, ...}) or None, "evals": [eval metric lines], "summary": summary.json or None}.
    """
    run = RunDir(trial_dir)
    metrics = read_jsonl(run.metrics_file)
    kept = set(checkpoint_names(run_dir))
    saved = {}  # uri -> latest record; a resumed run re-saves the steps after its checkpoint
    for event in read_jsonl(run.events_file):
        if event["type"] == "checkpoint_saved":
            saved[event["data"]["uri"]] = event["data"]
    scored = [d for d in saved.values() if d.get(metric) is not None and Path(d["uri"]).name in kept]
    pick = min if mode == "min" else max
    return {
        "steps": max((m["step"] for m in metrics if "train_loss" in m), default=0),
        "checkpoints_kept": len(kept),
        "best": pick(scored, key=lambda d: d[metric]) if scored else None,
        "evals": [m for m in metrics if m.get(metric) is not None],
        "summary": run.summary(),
    }
