"""The tune section: search-space validation before anything starts, and its translation to Ray Tune."""

from pathlib import Path

import numpy as np
import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from raysft.config import SpecError, advisories, load_spec, spec_to_yaml
from raysft.tune.space import num_samples, one_at_a_time_points, param_space, trial_count, trial_spec

BASE = {"model": {"name_or_path": "./models/base"}, "data": {"train": ["data/train.jsonl"]}}


def spec_with(tune: dict, **sections):
    return load_spec({**BASE, **sections, "tune": tune})


def errors_of(tune: dict, **sections) -> dict:
    with pytest.raises(SpecError) as info:
        spec_with(tune, **sections)
    return {v.field: v.message for v in info.value.violations}


def test_an_empty_search_space_is_an_error_naming_the_section():
    assert errors_of({"search_space": {}}) == {
        "tune.search_space": "is empty; add at least one dotted training key, e.g. train.learning_rate: {loguniform: [1.0e-5, 5.0e-4]}"}


def test_unknown_keys_suggest_the_closest_dotted_key():
    errs = errors_of({"search_space": {"train.learnig_rate": {"choice": [1e-4]}, "trian.epochs": {"choice": [2]},
                                       "model.lora.rank.x": {"choice": [1]}, "zzz": {"choice": [1]}}})
    assert errs["tune.search_space.train.learnig_rate"] == "unknown key; did you mean 'train.learning_rate'?"
    assert errs["tune.search_space.trian.epochs"] == "unknown key; did you mean 'train.epochs'?"
    assert errs["tune.search_space.model.lora.rank.x"] == "model.lora.rank is a value, not a section"
    assert errs["tune.search_space.zzz"].startswith("unknown key; give a dotted training key")


@pytest.mark.parametrize("key, dist, fragment", [
    ("train.learning_rate", {"choice": ["fast", "slow"]}, "'fast' does not fit: train.learning_rate: Input should be a valid number"),
    ("model.lora.rank", {"loguniform": [4, 64]}, "loguniform draws real numbers but model.lora.rank takes int; use {choice: [...]} or {randint: [low, high]}"),
    ("train.gradient_checkpointing", {"uniform": [0, 1]}, "takes bool; use {choice: [...]}"),
    ("train.learning_rate", {"randint": [1, 3]}, "randint draws integers but train.learning_rate takes float"),
    ("model.lora.rank", {"choice": [8, 0]}, "0 does not fit: model.lora.rank: must be > 0 (got 0)"),
    ("model.lora.dropout", {"uniform": [0.0, 1.0]}, "1.0 does not fit: model.lora.dropout: must be < 1"),
    ("model.method", {"choice": ["lora", "dora"]}, "'dora' does not fit: model.method: got 'dora'"),
    ("train.micro_batch_size", {"choice": [3]}, "3 does not fit: train.global_batch_size: 16 is not a multiple"),
    ("output_dir", {"choice": ["a", "b"]}, "cannot be searched"),
    ("tune.num_samples", {"choice": [2]}, "cannot be searched"),
])
def test_a_distribution_must_fit_its_keys_type_and_constraints(key, dist, fragment):
    errs = errors_of({"search_space": {key: dist}})
    assert fragment in errs[f"tune.search_space.{key}"], errs


def test_values_that_fit_pass_including_whole_sections_and_yaml_strings():
    spec = spec_with({"search_space": {
        "train.learning_rate": {"loguniform": ["1e-5", 5.0e-4]},  # YAML reads 1e-5 as a string
        "model.lora.rank": {"randint": [4, 64]}, "train.epochs": {"choice": [2, 3.5]},
        "model.lora": {"choice": [{"rank": 8, "alpha": 16}, {"rank": 16, "alpha": 32}]}}})
    assert spec.tune.search_space["train.learning_rate"].loguniform == (1e-5, 5e-4)
    assert spec.tune.mode == "min" and spec.tune.search == "random" and spec.tune.scheduler == "asha"
    assert load_spec({**BASE, "tune": spec.tune.model_dump(mode="json")}).tune == spec.tune
    assert "tune:" in spec_to_yaml(spec)


def test_distribution_shape_errors():
    errs = errors_of({"search_space": {"train.learning_rate": {"logunifrom": [1e-5, 1e-3]},
                                       "model.lora.rank": {"choice": [8], "grid": [16]},
                                       "train.epochs": {"uniform": [3, 1]}, "train.warmup_ratio": {"loguniform": [0, 0.1]}}})
    assert errs["tune.search_space.train.learning_rate.logunifrom"] == "unknown key; did you mean 'loguniform'?"
    assert errs["tune.search_space.model.lora.rank"] == "set exactly one of loguniform, uniform, randint, choice, grid; got choice, grid"
    assert errs["tune.search_space.train.epochs.uniform"] == "[low, high] needs low < high; got [3.0, 1.0]"
    assert errs["tune.search_space.train.warmup_ratio.loguniform"] == "a log scale needs low > 0; got 0"


@pytest.mark.parametrize("search, dist, fragment", [
    ("grid", {"loguniform": [1e-5, 1e-3]}, "search: grid tries listed values; use {choice: [...]} or {grid: [...]} instead of loguniform"),
    ("one_at_a_time", {"uniform": [1e-5, 1e-3]}, "search: one_at_a_time tries listed values"),
    ("optuna", {"grid": [1e-5, 1e-3]}, "optuna draws values"),
])
def test_search_methods_accept_only_the_distributions_they_can_use(search, dist, fragment):
    assert fragment in errors_of({"search": search, "search_space": {"train.learning_rate": dist}})["tune.search_space.train.learning_rate"]


def test_one_at_a_time_needs_a_base_value_along_the_key():
    errs = errors_of({"search": "one_at_a_time", "search_space": {"eval.early_stopping.patience": {"choice": [2, 4]}}})
    assert "eval.early_stopping is not set; add it to the spec" in errs["tune.search_space.eval.early_stopping.patience"]


def test_metric_mode_and_checkpoint_ranking_must_agree():
    space = {"train.learning_rate": {"choice": [1e-4]}}
    errs = errors_of({"search_space": space, "metric": "exact_match"})
    assert errs["tune.metric"] == "exact_match needs eval.generate.metric: exact_match"
    assert "set both to the same metric" in errs["checkpoint.keep_best_by"]
    assert errors_of({"search_space": space, "mode": "max"}) == {"tune.mode": "eval_loss is better when lower; set mode: min or leave it out"}
    assert "needs validation data" in errors_of({"search_space": space}, data={"train": ["t.jsonl"], "validation_split": 0})["tune.metric"]
    spec = spec_with({"search_space": space, "metric": "exact_match"}, eval={"generate": {"metric": "exact_match"}},
                     checkpoint={"keep_best_by": "exact_match"})
    assert spec.tune.mode == "max"


def test_asha_without_periodic_evaluation_is_a_warning():
    spec = spec_with({"search_space": {"train.learning_rate": {"choice": [1e-4]}}})
    assert any(w.field == "eval.every_steps" for w in advisories(spec))
    spec = spec_with({"search_space": {"train.learning_rate": {"choice": [1e-4]}}}, eval={"every_steps": 10})
    assert not any(w.field == "eval.every_steps" for w in advisories(spec))


def test_param_space_maps_each_distribution_to_a_tune_domain():
    spec = spec_with({"search_space": {"train.learning_rate": {"loguniform": [1e-5, 1e-3]}, "model.lora.rank": {"randint": [4, 8]},
                                       "model.lora.alpha": {"choice": [16, 32]}, "train.epochs": {"grid": [2, 3]},
                                       "model.lora.dropout": {"uniform": [0.0, 0.1]}}, "num_samples": 3})
    space = param_space(spec)
    lr, rank = space["train.learning_rate"], space["model.lora.rank"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-5, 1e-3) and "LogUniform" in type(lr.get_sampler()).__name__
    assert isinstance(rank, Integer) and (rank.lower, rank.upper) == (4, 9)  # both ends included
    assert isinstance(space["model.lora.alpha"], Categorical) and space["train.epochs"] == {"grid_search": [2, 3]}
    assert num_samples(spec) == 3 and trial_count(spec) == 6  # each grid value gets num_samples draws
    grid = spec_with({"search": "grid", "search_space": {"train.learning_rate": {"choice": [1e-4, 2e-4]},
                                                          "model.lora.rank": {"grid": [8, 16, 32]}}})
    assert param_space(grid)["train.learning_rate"] == {"grid_search": [1e-4, 2e-4]}
    assert num_samples(grid) == 1 and trial_count(grid) == 6


def test_one_at_a_time_varies_each_key_alone_around_the_base():
    spec = spec_with({"search": "one_at_a_time", "search_space": {
        "train.learning_rate": {"choice": [1e-4, 2e-4, 5e-4]}, "model.lora.rank": {"choice": [8, 32]}}})
    base = {"model.lora.rank": 16, "train.learning_rate": 2e-4}  # keys in spec order (load_spec sorts them)
    assert one_at_a_time_points(spec) == [
        base, {**base, "model.lora.rank": 8}, {**base, "model.lora.rank": 32},
        {**base, "train.learning_rate": 1e-4}, {**base, "train.learning_rate": 5e-4}]
    assert param_space(spec) == base and num_samples(spec) == trial_count(spec) == 5


def test_trial_spec_sets_values_and_writes_under_the_campaign(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.jsonl").write_text("{}\n")
    spec = spec_with({"search_space": {"train.learning_rate": {"loguniform": [1e-5, 1e-3]}}}, checkpoint={"storage_path": "s3://b/c"})
    base = spec.model_dump(mode="json", exclude_unset=True, exclude={"tune"})
    trial = trial_spec(base, {"train.learning_rate": np.float64(3e-4), "model.lora.rank": np.int64(8)},
                       tmp_path / "trials" / "abc_00001", storage_path="s3://b/c", cwd=tmp_path)
    assert trial.train.learning_rate == 3e-4 and trial.model.lora.rank == 8 and trial.tune is None
    assert trial.output_dir == str(tmp_path / "trials" / "abc_00001")
    assert trial.checkpoint.storage_path == "s3://b/c/trials/abc_00001"
    assert trial.data.train[0].path == str(tmp_path / "data/train.jsonl")  # relative to the driver's directory
    assert trial.model.name_or_path == "./models/base"  # not a local path there: left for the hub
    assert Path(base["data"]["train"][0]["path"]) == Path("data/train.jsonl")  # the base is not modified
