"""What the job service's next attempt of a run relies on: `raysft train SPEC --continue-run --from-step N`
takes the run's saved spec and resumes from the later of Ray Train's recorded checkpoint and step N's."""

import datetime

import pytest
import ray.train

from raysft.config import parse_spec, spec_to_yaml
from raysft.train.launcher import RunError, continued_spec, run_training
from raysft.train.loop import resume_point, checkpoint_name


def _spec(tmp_path, **train):
    return parse_spec({"model": {"name_or_path": "org/model"}, "data": {"train": ["x.jsonl"]},
                       "output_dir": str(tmp_path / "out"), "train": {"learning_rate": 2e-4, **train}})


def test_a_continued_run_uses_the_spec_it_saved_or_the_given_one_before_it_saved_any(tmp_path):
    first = _spec(tmp_path, seed=7)
    assert continued_spec(first) == first  # never got as far as writing spec.yaml
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "spec.yaml").write_text(spec_to_yaml(first.model_copy(update={"data": first.data.model_copy(
        update={"template_date": "2026-01-02"})})))
    assert continued_spec(_spec(tmp_path, seed=7)).data.template_date == datetime.date(2026, 1, 2)  # the day it encoded


def test_from_step_needs_a_run_to_continue(tmp_path):
    with pytest.raises(RunError, match="--from-step continues a run"):
        run_training(_spec(tmp_path), from_step=4)


def test_the_later_of_rays_record_and_the_named_step_is_resumed(tmp_path):
    at = {step: str(tmp_path / "checkpoints" / checkpoint_name(step)) for step in (4, 8, 12)}
    assert checkpoint_name(8) == "checkpoint_000008"
    assert resume_point(None, None) is None
    assert resume_point(None, at[8]).path == at[8]  # Ray recorded none before the driver died
    assert resume_point(ray.train.Checkpoint(at[4]), at[8]).path == at[8]  # Ray's record lags a save behind
    assert resume_point(ray.train.Checkpoint(at[12]), at[8]).path == at[12]  # a worker restart within the attempt
    assert resume_point(ray.train.Checkpoint(at[4]), None).path == at[4]
