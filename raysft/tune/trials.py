"""One trial's outcome as its training run left it on disk: steps run, checkpoints kept, its best evaluation.

Each trial is an ordinary training run in `trials/<id>/`; its Ray Train checkpoints live in
`<checkpoint storage>/checkpoints/` (the trial directory unless checkpoint.storage_path is set), and its events
say which of them Ray Train keeps (raysft.train.retention). A trial that ASHA stops is killed mid-run, which can
leave a checkpoint directory the events do not name (uploaded, but not yet registered and counted against
keep_last); `prune_checkpoints` removes those so retention holds for every trial.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs

from raysft.rundir import RunDir
from raysft.train.retention import best, checkpoint_name_of, kept_checkpoints
from raysft.train.runlog import read_jsonl

__all__ = ["checkpoint_dir", "checkpoint_names", "kept_on_storage", "prune_checkpoints", "trial_outcome"]


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


def kept_on_storage(trial_dir: Path, run_dir: str) -> list[dict]:
    """The checkpoint_saved records of the checkpoints the trial's events say are kept and storage still holds
    (a trial killed between Ray's deletion and its record of it leaves one the events still name)."""
    present = set(checkpoint_names(run_dir))
    kept = kept_checkpoints(read_jsonl(RunDir(trial_dir).events_file))
    return [c for c in kept if checkpoint_name_of(c["uri"]) in present]


def prune_checkpoints(trial_dir: Path, run_dir: str) -> list[str]:
    """Delete the checkpoint directories that the trial's events do not name as kept; returns the names kept.

    Only call it for a trial that ended and will not run again: a directory being uploaded is not named yet, and
    neither is one Ray registered a moment before the trial was killed (Ray's own record would then name a
    deleted checkpoint, which only matters to a run that resumes).
    """
    fs, root = _fs(run_dir)
    kept = {checkpoint_name_of(c["uri"]) for c in kept_on_storage(trial_dir, run_dir)}
    for name in checkpoint_names(run_dir):
        if name not in kept:
            fs.delete_dir(f"{root}/{name}")
    return sorted(kept)


def trial_outcome(trial_dir: Path, run_dir: str, metric: str) -> dict:
    """What a trial's training run left: steps, kept checkpoints, and its best evaluation among them.

    A trial is scored by its best evaluation whose checkpoint is still kept, so the score always names an
    adapter that exists (Ray Train keeps the best checkpoints by this same metric).

    Returns:
        {"steps": optimizer steps run, "checkpoints_kept": int, "best": the checkpoint_saved event data
        ({step, uri, eval_loss, ...}) or None, "evals": [eval metric lines], "summary": summary.json or None}.
    """
    run = RunDir(trial_dir)
    metrics = read_jsonl(run.metrics_file)
    kept = kept_on_storage(trial_dir, run_dir)
    return {
        "steps": max((m["step"] for m in metrics if "train_loss" in m), default=0),
        "checkpoints_kept": len(kept),
        "best": best(kept, metric),
        "evals": [m for m in metrics if m.get(metric) is not None],
        "summary": run.summary(),
    }
