"""The driver of `raysft tune`: check everything, run one training per Ray Tune trial, resume, collect outputs.

Each trial is the Ray Train v2 pattern: a Tune trial function that launches a `TorchTrainer` (through
`run_training`) whose reports reach Tune via `TuneReportCallback`. The trial function itself reserves only a
token of memory; the Train workers reserve the spec's `scaling` resources, and the number of trials running at
once is capped to what the cluster fits (the searcher creates no more), so the rest wait as pending instead
of holding a driver that waits for workers. Every trial's workers are separate processes that exit with its run, which releases their
GPU memory before the next trial starts.

Layout of OUTPUT_DIR: spec.yaml (the campaign spec), tune/ (Ray Tune's experiment state, what
`--resume` restores), trials/<id>/ (one training run per trial), best/, tune_summary.json,
tune_results.csv, tune_curves.png.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import ray
import ray.tune
from ray.train import ScalingConfig
from ray.tune.integration.ray_train import TuneReportCallback

from raysft.config import JobSpec, spec_to_yaml, with_absolute_paths
from raysft.model.load import resolve_model_path
from raysft.rundir import SPEC_FILE, RunDir
from raysft.train.rundata import cache_dir_of, prepare_run_data
from raysft.local_ray.connect import connect_ray
from raysft.train.launcher import RunError, fix_template_date, run_training
from raysft.train.runlog import read_jsonl
from raysft.train.tracking import finish_tracking, start_tracking
from raysft.tune.console import LiveTable
from raysft.tune.report import (export_best, factor_effects, format_factor_table, plot_curves, rank_trials,
                                write_results_csv)
from raysft.tune.space import (base_values, make_scheduler, make_searcher, num_samples, param_space, plain,
                               trial_count, trial_spec)
from raysft.tune.trials import checkpoint_dir, kept_on_storage, prune_checkpoints, trial_outcome

__all__ = ["run_campaign", "load_campaign_spec", "write_campaign_outputs"]

# What a trial function reserves: a logical amount of memory and no CPU, so that the CPUs (or GPUs) go to
# the Train workers it launches. Tune cannot place a trial that reserves nothing at all.
_TRIAL_MEMORY = 256 * 2**20
_STOPS = "tune_asha_stops.jsonl"


def load_campaign_spec(output_dir: str | Path) -> JobSpec:
    """The campaign spec a `raysft tune` run saved in its output_dir."""
    run = RunDir(output_dir)
    if not run.is_run() or not (run.root / "tune").is_dir():
        raise RunError(f"{output_dir} is not a raysft tune output_dir (no {SPEC_FILE} and tune/); pass the output_dir "
                       "of a campaign")
    return run.saved_spec()


def _run_trial(config: dict, *, base: dict, root: str, storage_path: str | None, cwd: str, tracking_parent: dict) -> None:
    """One trial: a full training run in trials/<trial id>/ whose evaluations Tune receives."""
    trial_id = ray.tune.get_context().get_trial_id()
    spec = trial_spec(base, config, Path(root) / "trials" / trial_id, storage_path=storage_path, cwd=Path(cwd))
    out, run = Path(spec.output_dir), RunDir(spec.output_dir)
    if run.summary_file.exists():
        return  # it finished before the campaign was interrupted
    # run_training writes spec.yaml first: this trial ran before (the campaign was interrupted). It continues
    # from its latest registered checkpoint; with none kept, it starts over without the earlier attempt's records.
    # Nothing is pruned first: a checkpoint Ray registered just before the kill may not be in the events yet, and
    # Ray's restore needs every checkpoint it registered (a leftover upload is saved over, or pruned at the end).
    resume = run.is_run()
    if resume and not kept_on_storage(out, checkpoint_dir(Path(root), trial_id, storage_path)):
        shutil.rmtree(out)
        resume = False
    run_training(spec, resume=resume, callbacks=[TuneReportCallback()], tracking_parent=tracking_parent, run_name=trial_id)


def _trial_dirname(trial) -> str:
    return trial.trial_id


class _PruneFinished(ray.tune.Callback):
    """Keeps disk bounded while a campaign runs: a trial ASHA stops is killed mid-run and can leave a
    checkpoint its events do not name as kept; it is removed as soon as the trial ends."""

    def __init__(self, out: str, storage_path: str | None):
        self.out, self.storage_path = out, storage_path

    def _prune(self, trial) -> None:
        out = Path(self.out)
        prune_checkpoints(out / "trials" / trial.trial_id, checkpoint_dir(out, trial.trial_id, self.storage_path))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._prune(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._prune(trial)


def _concurrency(spec: JobSpec) -> tuple[int, dict, dict]:
    """(trials at once, resources one trial's workers need, the cluster's resources)."""
    s, have = spec.scaling, ray.cluster_resources()
    use_gpu = have.get("GPU", 0) > 0 if s.use_gpu == "auto" else bool(s.use_gpu)
    need = ScalingConfig(num_workers=s.num_workers, use_gpu=use_gpu, resources_per_worker=s.resources_per_worker).total_resources
    fits = min((int(have.get(k, 0) // v) for k, v in need.items() if v > 0), default=1)
    wanted = spec.tune.max_concurrent_trials or fits
    return max(1, min(wanted, fits)), need, {k: have.get(k, 0) for k in need}


def run_campaign(spec: JobSpec, *, resume: bool = False) -> dict:
    """Run (or continue) the hyperparameter campaign of `spec.tune`; returns tune_summary.json's content.

    Args:
        spec: a validated spec with a tune section.
        resume: continue the campaign in `spec.output_dir`: finished trials are kept, interrupted ones continue
            from their latest checkpoint, and the searcher (Optuna included) picks up its saved state.

    Raises:
        RunError: no tune section, the output_dir holds another campaign (or none to resume), Ray is
            unreachable, or no trial produced a scored checkpoint.
        raysft.data.errors.DataError, raysft.model.load.ModelError: bad data or model path.
    """
    started = time.time()
    spec = _prepared(spec, resume)
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        RunDir(out).spec_file.write_text(spec_to_yaml(spec), encoding="utf-8")
    # Trials' own output goes to their trials/<id>/ files; the console shows the trial table.
    connect_ray(log_to_driver=False)
    # One parent tracking run for the campaign (reopened on --resume); each trial's run is its child.
    tracking = start_tracking(spec, out)
    tuner = _tuner(spec, resume, tracking_parent=(tracking or {}).get("runs", {}))
    summary = None
    try:
        summary = write_campaign_outputs(spec, out, tuner.fit(), time.time() - started, resume)
        return summary
    finally:
        finish_tracking(spec, out, tracking, summary)


def _prepared(spec: JobSpec, resume: bool) -> JobSpec:
    """The campaign's spec once its output_dir, model and data are checked and its data encoded (RunError, DataError,
    ModelError otherwise): absolute paths, the template date and the cache dir every trial shares."""
    if spec.tune is None:
        raise RunError("the spec has no tune section; add tune: {search_space: {...}} or run `raysft train`")
    spec = fix_template_date(with_absolute_paths(spec, Path.cwd()))  # every trial encodes with the campaign's day
    out = Path(spec.output_dir)
    experiment = out / "tune"
    if resume and not ray.tune.Tuner.can_restore(str(experiment)):
        raise RunError(f"{out} holds no campaign state to resume (tune/); start one with `raysft tune SPEC`")
    if not resume and (experiment.exists() or (out / "trials").exists()):
        raise RunError(f"output_dir {out} already holds a campaign; continue it with `raysft tune --resume {out}` "
                       "or set output_dir to a new directory")
    resolve_model_path(spec.model.name_or_path)  # bad model or data fail here, not once per trial
    # Encoded once here; every trial's run finds the entry by its key (a trial that changes a data setting gets its own).
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"cache_dir": str(cache_dir_of(spec))})})
    data, _ = prepare_run_data(spec, before_encode=lambda: connect_ray(log_to_driver=False))
    print(f"[raysft] data: {data.split('train')['rows']} train / {data.split('validation')['rows']} validation "
          f"examples, cached in {data.location}", flush=True)
    return spec


def _tuner(spec: JobSpec, resume: bool, tracking_parent: dict) -> ray.tune.Tuner:
    """The campaign's Tuner: restored from output_dir/tune on resume, else new, one `_run_trial` per trial."""
    tune, out, storage = spec.tune, Path(spec.output_dir), spec.checkpoint.storage_path
    base = spec.model_dump(mode="json", exclude_unset=True, exclude={"tune"})
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_run_trial, base=base, root=str(out), storage_path=storage, cwd=os.getcwd(),
                                 tracking_parent=tracking_parent),
        ray.tune.PlacementGroupFactory([{"memory": _TRIAL_MEMORY}]))
    if resume:
        print(f"[raysft] resuming the campaign in {out}", flush=True)
        return ray.tune.Tuner.restore(str(out / "tune"), trainable=trainable)
    cap, need, have = _concurrency(spec)
    print(f"[raysft] campaign: {trial_count(spec)} trials ({tune.search} search, scheduler {tune.scheduler}), "
          f"{cap} at a time: each trial's workers need {need}, the cluster has {have}", flush=True)
    return ray.tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=ray.tune.TuneConfig(
            metric=tune.metric, mode=tune.mode, search_alg=make_searcher(spec, cap),
            scheduler=make_scheduler(spec, out / _STOPS), num_samples=num_samples(spec),
            time_budget_s=tune.time_budget_s, reuse_actors=False, trial_dirname_creator=_trial_dirname),
        run_config=ray.tune.RunConfig(
            name="tune", storage_path=str(out), verbose=0,
            callbacks=[LiveTable(list(tune.search_space), tune.metric, tune.mode, trial_count(spec)),
                       _PruneFinished(str(out), storage)]),
    )


def write_campaign_outputs(spec: JobSpec, out: Path, results, wall_time_s: float, resumed: bool) -> dict:
    tune = spec.tune
    storage = spec.checkpoint.storage_path
    asha_stops = {r["trial"] for r in read_jsonl(out / _STOPS)}
    trials, outcomes = [], {}
    for result in results:
        trial_id = Path(result.path).name
        run_dir = checkpoint_dir(out, trial_id, storage)
        prune_checkpoints(out / "trials" / trial_id, run_dir)  # killed mid-upload after its on_trial_complete pruning
        outcome = outcomes[trial_id] = trial_outcome(out / "trials" / trial_id, run_dir, tune.metric)
        best = outcome["best"] or {}
        if result.error:
            status = "error"
        elif outcome["summary"] is not None:
            status = "completed"
        else:
            status = "stopped" if outcome["steps"] else "pending"
        if status == "stopped":
            stopped_by = "asha" if trial_id in asha_stops else ("time_budget" if tune.time_budget_s else "interrupted")
        else:
            stopped_by = "early_stopping" if (outcome["summary"] or {}).get("early_stopped") else None
        trials.append({  # a trial whose actor died before it started has no config in its Result
            "id": trial_id, "config": {k: plain(v) for k, v in (result.config or {}).items()}, "status": status,
            "eval_loss": best.get("eval_loss"), "exact_match": best.get("exact_match"), "best_step": best.get("step"),
            "steps": outcome["steps"], "checkpoints_kept": outcome["checkpoints_kept"],
            "early_stopped": stopped_by is not None, "stopped_by": stopped_by, "dir": str(out / "trials" / trial_id),
            "error": str(result.error).strip().splitlines()[0] if result.error else None,
        })
    trials = rank_trials(trials, tune.metric, tune.mode)
    winner = trials[0] if trials and trials[0]["rank"] == 1 else None
    summary = {
        "best": None, "metric": tune.metric, "mode": tune.mode, "search": tune.search, "scheduler": tune.scheduler,
        "num_trials": len(trials), "steps_total": sum(t["steps"] for t in trials),
        "statuses": {s: sum(t["status"] == s for t in trials) for s in sorted({t["status"] for t in trials})},
        "resumed": resumed, "wall_time_s": round(wall_time_s, 2), "trials": trials,
    }
    if winner:
        export_best(winner, outcomes[winner["id"]], out / "best")
        summary["best"] = {"trial": winner["id"], "config": winner["config"], "eval_loss": winner["eval_loss"],
                           "exact_match": winner["exact_match"], "step": winner["best_step"],
                           "dir": str(out / "best"), "trial_dir": winner["dir"]}
    if tune.search == "one_at_a_time":
        summary["factors"] = factor_effects(trials, base_values(spec), tune.metric)
        print(f"[raysft] factor effects on {tune.metric}:\n{format_factor_table(summary['factors'], tune.metric)}", flush=True)
    RunDir(out).tune_summary_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    write_results_csv(trials, list(tune.search_space), tune.metric, out / "tune_results.csv")
    plot_curves(trials, {t: o["evals"] for t, o in outcomes.items()}, tune.metric, out / "tune_curves.png")
    if winner is None:
        raise RunError(f"no trial produced a checkpoint scored by {tune.metric}; see each trial's error in "
                       f"{RunDir(out).tune_summary_file} and its log in {RunDir(out).trials}")
    return summary
