"""Spec paths a server-side job reads or writes stay under the allowed roots."""

import pytest

from raysft.config import parse_spec
from raysft.service.errors import InvalidArgument
from raysft.service.paths import PathPolicy


@pytest.fixture
def roots(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    data.mkdir()
    (tmp_path / "outside").mkdir()
    return data, models, tmp_path


def _spec(**sections):
    raw = {"model": {"name_or_path": "org/model"}, "data": {"train": ["train.jsonl"]}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(raw)


def _fields(exc_info):
    return [v.field for v in exc_info.value.violations]


def test_relative_paths_resolve_under_the_first_root_and_output_dir_defaults_to_the_jobs_root(roots):
    data, models, tmp = roots
    policy = PathPolicy([data, models], tmp / "runs")
    raw = policy.apply(_spec(model={"name_or_path": str(models / "tiny")}, data={"train": ["a/../train.jsonl"],
                                                                                  "validation": "val.jsonl"}), "job-1")
    assert raw["data"]["train"][0]["path"] == str(data / "train.jsonl")
    assert raw["data"]["validation"] == str(data / "val.jsonl")
    assert raw["model"]["name_or_path"] == str(models / "tiny")
    assert raw["output_dir"] == str(tmp / "runs" / "job-1")
    assert "output_dir" not in policy.apply(_spec(), None)  # validate-only: no job id yet


def test_hub_ids_and_storage_uris_are_not_paths(roots):
    data, _, tmp = roots
    raw = PathPolicy([data], tmp / "runs").apply(_spec(checkpoint={"storage_path": "s3://bucket/ckpt"}), "j")
    assert raw["model"]["name_or_path"] == "org/model" and raw["checkpoint"]["storage_path"] == "s3://bucket/ckpt"


@pytest.mark.parametrize("sections, field", [
    ({"data": {"train": ["../outside/x.jsonl"]}}, "data.train.0.path"),
    ({"data": {"train": ["ok.jsonl", {"path": "/etc/passwd"}]}}, "data.train.1.path"),
    ({"data": {"mix": [{"path": "../../x.jsonl", "ratio": 0.2}]}}, "data.mix.0.path"),
    ({"data": {"validation": "~/secrets.jsonl"}}, "data.validation"),
    ({"model": {"name_or_path": "../models/../../etc"}}, "model.name_or_path"),
    ({"model": {"init_adapter": "/tmp"}}, "model.init_adapter"),
    ({"checkpoint": {"storage_path": "../ckpt"}}, "checkpoint.storage_path"),
    ({"output_dir": "/var/tmp/run"}, "output_dir"),
    ({"tune": {"search_space": {"model.init_adapter": {"choice": ["a", "../../b"]}}}}, "tune.search_space.model.init_adapter.choice.1"),
])
def test_escapes_are_refused_naming_the_field(roots, sections, field):
    data, _, tmp = roots
    with pytest.raises(InvalidArgument) as err:
        PathPolicy([data], tmp / "runs").apply(_spec(**sections), "j")
    assert _fields(err) == [field]
    assert "outside the server's allowed roots" in str(err.value)


def test_symlinks_out_of_a_root_are_escapes(roots):
    data, _, tmp = roots
    (data / "link").symlink_to(tmp / "outside")
    with pytest.raises(InvalidArgument) as err:
        PathPolicy([data], tmp / "runs").apply(_spec(data={"train": ["link/x.jsonl"]}), "j")
    assert _fields(err) == ["data.train.0.path"]
