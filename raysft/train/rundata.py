"""The run's data on both sides of the driver/worker seam: the driver prepares (or reuses) the cache entry, each
worker opens it and reads only its own micro batches' rows.

What crosses the seam is `WorkerInput`: the spec, where to write, and where the cache entry is. No rows travel
through Ray's object store, and the driver holds the manifest (per-row lengths and target counts), not the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysft.config import JobSpec
from raysft.data.cache import CachedData, default_cache_dir, open_entry
from raysft.data.prepare import prepare_cached
from raysft.model.load import load_tokenizer, resolve_model_path

__all__ = ["WorkerInput", "cache_dir_of", "prepare_run_data", "open_run_data"]


@dataclass(frozen=True)
class WorkerInput:
    """What `train_loop_per_worker` receives from the launcher (`train_loop_config={"run": WorkerInput}`)."""

    spec: dict
    """The validated JobSpec as JSON data (every worker re-validates it into a `JobSpec`)."""
    output_dir: str
    """The run's output_dir: metrics.jsonl, events.jsonl, samples.jsonl."""
    storage_path: str
    """Where Ray persists checkpoints (output_dir or checkpoint.storage_path)."""
    cache_dir: str
    """`data.cache_dir` (or its default): a path every worker can read, or a URI."""
    data_key: str
    """The cache key of the run's data: its entry is `<cache_dir>/<data_key>` (`raysft.data.cache`)."""
    resume_from: str | None = None
    """A checkpoint URI to continue from when Ray Train has none of its own (`raysft train --continue-run`)."""
    tracking: dict | None = None
    """The experiment-tracking runs the driver opened (`raysft.train.tracking.start_tracking`); rank 0 logs to them."""


def cache_dir_of(spec: JobSpec) -> str | Path:
    """`data.cache_dir` (a URI as given, a local path resolved), or `.raysft-cache` beside output_dir."""
    given = spec.data.cache_dir
    if not given:
        return default_cache_dir(spec.output_dir)
    return given if "://" in given else Path(given).expanduser().resolve()


def prepare_run_data(spec: JobSpec, *, use_ray: bool = True, before_encode=None,
                     announce: bool = True) -> tuple[CachedData, bool]:
    """The cache entry of `spec`'s data (`template_date` fixed), built when missing; prints a line on a hit.

    `before_encode` runs on a miss before encoding (the launcher connects to Ray there); `announce=False` keeps
    stdout free for `raysft data prepare --json`.

    Raises:
        raysft.data.errors.DataError: unreadable data, an unwritable cache dir, nothing to train on.
        raysft.model.load.ModelError: the model path has no tokenizer.
    """
    m = spec.model
    tokenizer = load_tokenizer(m.name_or_path, trust_remote_code=m.trust_remote_code)
    entry, hit = prepare_cached(spec.data, spec.train.seed, tokenizer, str(resolve_model_path(m.name_or_path)),
                                cache_dir_of(spec), use_ray=use_ray, before_encode=before_encode)
    if hit and announce:
        print(f"[raysft] data: cache hit {entry.location} (key {entry.key}), preprocessing skipped", flush=True)
    return entry, hit


def open_run_data(cache_dir: str, key: str) -> CachedData:
    """A worker's view of the run's cache entry (complete by construction: the driver published it)."""
    entry = open_entry(cache_dir, key)
    if entry is None:
        raise RuntimeError(f"the run's data cache {cache_dir} (key {key}) is missing or incomplete on this node; on a "
                           "multi-node cluster set data.cache_dir to a path every node mounts, or a URI")
    return entry
