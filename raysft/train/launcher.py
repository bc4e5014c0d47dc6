"""The driver side of `raysft train`: validate everything, start the TorchTrainer, collect the outputs.

Everything a user can get wrong (spec, model path, data) is checked here, before any worker starts.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import Path

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raysft.config import JobSpec, score_order, spec_to_yaml, with_absolute_paths
from raysft.data.cache import CachedData
from raysft.estimate import EstimateError, estimate_for_spec, format_estimate
from raysft.local_ray.connect import connect_ray
from raysft.model.load import resolve_model_path
from raysft.rundir import SPEC_FILE, WEIGHT_DIRS, RunDir
from raysft.train.allocator import cpu_allocator, worker_runtime_env
from raysft.train.loop import checkpoint_name, train_loop_per_worker
from raysft.train.outputs import write_outputs
from raysft.train.retention import best, kept_checkpoints
from raysft.train.runlog import RunLog, read_jsonl
from raysft.train.rundata import WorkerInput, prepare_run_data
from raysft.train.tracking import finish_tracking, start_tracking

__all__ = ["RunError", "run_training", "load_run_spec", "continued_spec", "fix_template_date", "holds_run"]


class RunError(RuntimeError):
    """A run cannot start or did not finish; the message says why and what to do."""


def load_run_spec(run_dir: str | Path) -> JobSpec:
    """The resolved spec a run saved in its output_dir."""
    spec = RunDir(run_dir).saved_spec()
    if spec is None:
        raise RunError(f"{run_dir} is not a raysft run directory (no {SPEC_FILE}); pass the output_dir of a run")
    return spec


def continued_spec(spec: JobSpec) -> JobSpec:
    """The spec a run started from `spec` saved in its output_dir (its template date and all), or `spec`
    itself when the run never got as far as saving it; for `raysft train SPEC --continue-run`."""
    return RunDir(spec.output_dir).saved_spec() or spec


def fix_template_date(spec: JobSpec) -> JobSpec:
    """The spec with `data.template_date` set (today when unset), so every encoding of this run sees one day."""
    if spec.data.template_date is not None:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"template_date": datetime.date.today()})})


def holds_run(storage: str) -> bool:
    """Whether the Ray run `checkpoints` exists under `storage` (a local path or a URI Ray storage accepts)."""
    if "://" not in storage:
        return (Path(storage) / "checkpoints").exists()
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(storage)
        return fs.get_file_info(f"{path.rstrip('/')}/checkpoints").type != pyarrow.fs.FileType.NotFound
    except (OSError, ValueError) as exc:  # pyarrow.ArrowException subclasses these
        raise RunError(f"cannot check checkpoint.storage_path {storage}: {exc}; check the URI and its credentials") from None


def _use_gpu(spec: JobSpec) -> bool:
    if spec.scaling.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(spec.scaling.use_gpu)


def run_training(spec: JobSpec, *, resume: bool = False, from_step: int | None = None, callbacks: list | None = None,
                 tracking_parent: dict | None = None, run_name: str | None = None) -> dict:
    """Train `spec` on Ray and write its outputs; returns the run summary.

    Args:
        spec: a validated job spec.
        resume: continue the run already in `spec.output_dir` from its latest checkpoint.
        from_step: with resume, the step of a checkpoint known to be complete (the job service's latest): the
            run continues from it unless Ray Train recorded a later one.
        callbacks: extra Ray Train `UserCallback`s for the run, e.g. Tune's `TuneReportCallback` when the
            run is one trial of a `raysft tune` campaign.
        tracking_parent, run_name: a tune trial's parent tracking runs and its name (see `start_tracking`).

    Raises:
        RunError: the output_dir holds another run, Ray is unreachable, or training failed.
        raysft.data.errors.DataError, raysft.model.load.ModelError: bad data or model path.
    """
    started = time.time()
    spec = fix_template_date(with_absolute_paths(spec, Path.cwd()))  # workers do not share the cwd
    out = Path(spec.output_dir)
    _check_start(spec, resume, from_step)
    resolve_model_path(spec.model.name_or_path)
    data = _prepare(spec)
    connect_ray()
    tracking = start_tracking(spec, out, parent=tracking_parent, run_name=run_name)
    trainer = _trainer(spec, data, from_step, tracking, list(callbacks or []))
    summary = None
    try:
        try:
            result = trainer.fit()
        except Exception as exc:  # TrainingFailedError wraps the worker's exception
            raise RunError(f"training failed: {exc}") from exc
        if result.error:
            raise RunError(f"training failed: {result.error}")
        chosen = _best_kept(out, spec.checkpoint.keep_best_by)
        _export_best(ray.train.Checkpoint(chosen["uri"]), out)
        best_metrics = {k: v for k, v in chosen.items() if k != "uri"}
        summary = write_outputs(out, spec, data, result.return_value or {}, best_metrics, time.time() - started)
        return summary
    finally:
        finish_tracking(spec, out, tracking, summary)


def _storage(spec: JobSpec) -> str:
    """Where Ray Train keeps the run (`<storage>/checkpoints/`): checkpoint.storage_path, else output_dir."""
    return spec.checkpoint.storage_path or str(Path(spec.output_dir))


def _check_start(spec: JobSpec, resume: bool, from_step: int | None) -> None:
    try:
        cpu_allocator()
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if from_step is not None and not resume:
        raise RunError("--from-step continues a run: pass it with --resume or --continue-run")
    storage, out = _storage(spec), str(Path(spec.output_dir))
    if not resume and holds_run(storage):
        # Ray Train would restore the run it finds there (its snapshot names the checkpoints to load).
        where = f"output_dir {out}" if storage == out else f"checkpoint.storage_path {storage}"
        raise RunError(f"{where} already holds a run; continue it with `raysft train --resume {spec.output_dir}` "
                       "or use a new directory")


def _prepare(spec: JobSpec) -> CachedData:
    """The run's encoded data (a miss encodes on the cluster's CPUs), said on the console; output_dir made, spec.yaml in it."""
    out = Path(spec.output_dir)
    data, hit = prepare_run_data(spec, before_encode=connect_ray)
    train_split, val_split = data.split("train"), data.split("validation")
    print(f"[raysft] data: {train_split['rows']} train / {val_split['rows']} validation examples, "
          f"{data.encoding['train']['trained_fraction']:.1%} of train tokens trained on", flush=True)
    for line in data.encoding["train"].get("warnings", []):
        print(f"[raysft] data: {line}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    # Ray Train's print patch would echo every worker line twice; it is propagated to the workers.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    RunDir(out).spec_file.write_text(spec_to_yaml(spec), encoding="utf-8")
    if hit:
        RunLog(out, enabled=True).event("info", "data_cache_hit", f"encoded data reused from {data.location}",
                                        {"cache_dir": data.location, "key": data.key, "rows": train_split["rows"]})
    return data


def _trainer(spec: JobSpec, data: CachedData, from_step: int | None, tracking: dict | None,
             callbacks: list) -> TorchTrainer:
    """The run's TorchTrainer; Ray Train keeps keep_last checkpoints, ranked by keep_best_by when there is validation
    data to score them (by recency without)."""
    storage, use_gpu = _storage(spec), _use_gpu(spec)
    if use_gpu:
        _print_estimate(spec)
    has_val = bool(data.split("validation")["rows"]) or bool(spec.eval.generate
                                                             and data.manifest["validation_conversations"])
    metric = spec.checkpoint.keep_best_by if has_val else None
    resume_from = f"{storage.rstrip('/')}/checkpoints/{checkpoint_name(from_step)}" if from_step is not None else None
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": WorkerInput(spec=spec.model_dump(mode="json"), output_dir=str(Path(spec.output_dir)),
                                              storage_path=storage, cache_dir=data.cache_dir, data_key=data.key,
                                              resume_from=resume_from, tracking=tracking)},
        scaling_config=ScalingConfig(num_workers=spec.scaling.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=spec.scaling.resources_per_worker),
        run_config=RunConfig(
            name="checkpoints",
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.checkpoint.keep_last, checkpoint_score_attribute=metric,
                checkpoint_score_order=score_order(metric)),
            failure_config=FailureConfig(max_failures=spec.scaling.max_failures),
            callbacks=callbacks,
            worker_runtime_env=worker_runtime_env(use_gpu),
        ),
    )


def _print_estimate(spec: JobSpec) -> None:
    try:
        est = estimate_for_spec(spec)
    except EstimateError as exc:
        print(f"[raysft] no memory estimate: {exc}", flush=True)
        return
    print(format_estimate(est), flush=True)
    if est["fits"] is False:
        print(f"[raysft] warning: predicted {est['total_gb']} GB per GPU exceeds {est['gpu_memory_gb']} GB; "
              "see the suggestions above", flush=True)


def _best_kept(out: Path, metric: str) -> dict:
    """The checkpoint_saved record of the best checkpoint Ray Train kept by `metric` (the latest when none is scored)."""
    kept = kept_checkpoints(read_jsonl(RunDir(out).events_file))
    if not kept:
        raise RunError("training finished without a checkpoint; check the worker logs above")
    return best(kept, metric) or kept[-1]


def _export_best(checkpoint, out: Path) -> None:
    with checkpoint.as_directory() as ckpt:
        for name in WEIGHT_DIRS:
            src = Path(ckpt) / name
            if src.exists():
                shutil.rmtree(out / name, ignore_errors=True)
                shutil.copytree(src, out / name)
        RunDir(out).best_checkpoint_file.write_text(json.dumps({"path": checkpoint.path}))
