"""From a spec's `tune:` section to Ray Tune: the search space, the searcher, the scheduler, and each trial's spec.

A trial's config is a flat mapping of dotted training keys to values ({"train.learning_rate": 3e-4, ...}); its
spec is the base spec (without the tune section) with those keys set, writing into `trials/<trial id>/`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import ray.tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

from raysft.config import JobSpec, SearchDistribution, absolute_paths, parse_spec, set_values

__all__ = ["base_values", "one_at_a_time_points", "param_space", "make_searcher", "make_scheduler", "num_samples",
           "trial_count", "trial_spec", "plain"]

# ASHA's max_t only bounds its rung ladder (grace × rf^k); with stop_last_trials=False no trial is stopped for
# reaching it, so each trial still ends where its own training ends.
_ASHA_MAX_T = 10**9


def plain(value: Any) -> Any:
    """A JSON/YAML-friendly Python value (Tune samples numpy scalars)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) else value


def base_values(spec: JobSpec) -> dict[str, Any]:
    """Each searched key's value in the base spec, as JSON data (one_at_a_time: the controlled variables)."""
    dumped = spec.model_dump(mode="json")
    out = {}
    for key in spec.tune.search_space:
        node: Any = dumped
        for part in key.split("."):
            node = node[part]  # for one_at_a_time, validation made sure every section along the key is set
        out[key] = node
    return out


def one_at_a_time_points(spec: JobSpec) -> list[dict[str, Any]]:
    """The base config first, then one config per listed value of each key with every other key at its base value."""
    base = base_values(spec)
    points = [dict(base)]
    for key, dist in spec.tune.search_space.items():
        for value in getattr(dist, dist.kind):
            if value != base[key]:
                points.append({**base, key: value})
    return points


def _domain(dist: SearchDistribution, grid: bool):
    kind, args = dist.kind, getattr(dist, dist.kind)
    if kind == "loguniform":
        return ray.tune.loguniform(*args)
    if kind == "uniform":
        return ray.tune.uniform(*args)
    if kind == "randint":
        return ray.tune.randint(args[0], args[1] + 1)  # Tune's upper bound is exclusive; ours is included
    if kind == "grid" or grid:
        return ray.tune.grid_search(list(args))
    return ray.tune.choice(list(args))


def param_space(spec: JobSpec) -> dict[str, Any]:
    """Tune's param_space: dotted key -> domain. one_at_a_time: the base values (its points replace them)."""
    tune = spec.tune
    if tune.search == "one_at_a_time":
        return base_values(spec)
    return {key: _domain(dist, grid=tune.search == "grid") for key, dist in tune.search_space.items()}


def num_samples(spec: JobSpec) -> int:
    """Tune's num_samples: grid runs the grid once, one_at_a_time runs each of its points once."""
    tune = spec.tune
    if tune.search == "grid":
        return 1
    if tune.search == "one_at_a_time":
        return len(one_at_a_time_points(spec))
    return tune.num_samples


def trial_count(spec: JobSpec) -> int:
    """How many trials the campaign runs (before ASHA or a time budget cut any short)."""
    tune = spec.tune
    grids = [len(getattr(d, d.kind)) for d in tune.search_space.values()
             if d.kind == "grid" or (tune.search == "grid" and d.kind == "choice")]
    per_sample = 1
    for size in grids:
        per_sample *= size
    return num_samples(spec) * per_sample if tune.search != "one_at_a_time" else num_samples(spec)


def make_searcher(spec: JobSpec, max_concurrent: int):
    """The search algorithm, seeded by train.seed so a campaign draws the same configs when re-run, running at
    most `max_concurrent` trials at once (TuneConfig.max_concurrent_trials does not limit random/grid search)."""
    tune, seed = spec.tune, spec.train.seed
    if tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=max_concurrent)  # metric, mode: TuneConfig
    points = one_at_a_time_points(spec) if tune.search == "one_at_a_time" else None
    return BasicVariantGenerator(points_to_evaluate=points, random_state=seed, max_concurrent=max_concurrent)


class _ASHA(ASHAScheduler):
    """ASHA that also appends each stop it decides ({trial, step, metric}) to a JSONL file.

    Ray Tune keeps no scheduler state across a resume, so the file is what tells, at the end, which trials
    ASHA cut (a trial can also end early by its own early stopping or the campaign's time budget).
    """

    def __init__(self, stops_file: str, **kwargs):
        super().__init__(**kwargs)
        self._stops_file = stops_file

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP:
            record = {"trial": trial.trial_id, "step": result.get("step"), self._metric: result.get(self._metric)}
            with open(self._stops_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return action


def make_scheduler(spec: JobSpec, stops_file: Path):
    """ASHA on optimizer steps (judged at each evaluation), or None for scheduler: none."""
    tune = spec.tune
    if tune.scheduler == "none":
        return None
    return _ASHA(str(stops_file), time_attr="step", max_t=_ASHA_MAX_T, grace_period=tune.grace_period_steps,
                 reduction_factor=tune.reduction_factor, stop_last_trials=False)


def trial_spec(base: dict, config: dict, trial_dir: Path, *, storage_path: str | None, cwd: Path) -> JobSpec:
    """The training spec of one trial.

    Args:
        base: the campaign spec dumped without its tune section and without unset defaults.
        config: the trial's dotted key -> value mapping.
        trial_dir: the trial's output_dir.
        storage_path: the campaign's checkpoint.storage_path (None: checkpoints live in trial_dir).
        cwd: the driver's working directory, against which relative paths resolve.
    """
    raw = set_values(copy.deepcopy(base), {k: plain(v) for k, v in config.items()})
    raw["output_dir"] = str(trial_dir)
    if storage_path:
        set_values(raw, {"checkpoint.storage_path": f"{storage_path.rstrip('/')}/trials/{trial_dir.name}"})
    absolute_paths(raw, cwd)
    return parse_spec(raw)
