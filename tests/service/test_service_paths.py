"""Spec paths a server-side job reads or writes stay under the allowed roots."""

import pytest

from raysft.config import parse_spec
from raysft.service.jobs.errors import InvalidArgument
from raysft.service.jobs.paths import MARKER, PathPolicy


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


def test_hub_ids_stay_and_storage_uris_need_an_allowed_prefix_and_get_the_job_id(roots):
    data, _, tmp = roots
    policy = PathPolicy([data], tmp / "runs", ("s3://bucket/ckpt",))
    raw = policy.apply(_spec(checkpoint={"storage_path": "s3://bucket/ckpt/team-a/"}), "j")
    assert raw["model"]["name_or_path"] == "org/model" and raw["checkpoint"]["storage_path"] == "s3://bucket/ckpt/team-a/j"
    assert policy.apply(_spec(checkpoint={"storage_path": "s3://bucket/ckpt"}), None)["checkpoint"]["storage_path"] == \
        "s3://bucket/ckpt"  # validate-only: no job id to add


@pytest.mark.parametrize("uri, says", [
    ("s3://bucket/ckpt?endpoint_override=127.0.0.1:9&scheme=http", "no query strings"),
    ("s3://bucket/ckpt#x", "no query strings"),
    ("s3://key:secret@bucket/ckpt", "without user info"),
    ("s3://bucket/ckpt/../other", "'..' segments"),
    ("s3://bucket/ckpt//x", "empty"),
    ("s3://bucket/ckptx", "not under a storage prefix"),
    ("gs://bucket/ckpt", "not under a storage prefix"),
    ("S3://bucket/other", "not under a storage prefix"),
])
def test_remote_storage_outside_the_prefixes_or_with_options_is_refused(roots, uri, says):
    data, _, tmp = roots
    with pytest.raises(InvalidArgument) as err:
        PathPolicy([data], tmp / "runs", ("s3://bucket/ckpt",)).apply(_spec(checkpoint={"storage_path": uri}), "j")
    assert _fields(err) == ["checkpoint.storage_path"] and says in str(err.value)


@pytest.mark.parametrize("value", ["file:///outside/ck", "/outside/a://b", "file://../x", "x/../../../a://b"])
def test_file_uris_and_strings_holding_a_scheme_mark_are_local_paths(roots, value):
    data, _, tmp = roots
    with pytest.raises(InvalidArgument) as err:
        PathPolicy([data], tmp / "runs").apply(_spec(checkpoint={"storage_path": value}), "j")
    assert _fields(err) == ["checkpoint.storage_path"]


def test_a_file_uri_under_a_root_becomes_its_resolved_path_with_the_job_id(roots):
    data, _, tmp = roots
    raw = PathPolicy([data], tmp / "runs").apply(_spec(checkpoint={"storage_path": f"file://{data}/ck/"}), "j")
    assert raw["checkpoint"]["storage_path"] == str(data / "ck" / "j")


def test_bad_storage_prefixes_are_refused_at_start(roots):
    data, _, tmp = roots
    for prefix in ("s3://bucket/p?endpoint_override=x", "/local/dir", "file:///x"):
        with pytest.raises(ValueError, match="--allowed-storage"):
            PathPolicy([data], tmp / "runs", (prefix,))


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


def _claimed(policy, job_id):
    return policy.claim(policy.apply(_spec(), job_id), job_id)[0]


def test_claim_creates_the_output_dir_with_a_marker_and_a_second_claim_is_refused(roots):
    data, _, tmp = roots
    policy = PathPolicy([tmp], tmp / "runs")
    out = _claimed(policy, "job-a")
    assert (out / MARKER).read_text().strip() == "job-a" and out == tmp / "runs" / "job-a"
    with pytest.raises(InvalidArgument) as err:
        policy.claim({"output_dir": str(out)}, "job-b")
    assert _fields(err) == ["output_dir"]


def test_a_local_storage_directory_is_claimed_too_and_released_with_the_output_dir(roots):
    data, _, tmp = roots
    policy = PathPolicy([tmp], tmp / "runs")
    raw = policy.apply(_spec(checkpoint={"storage_path": "ckpts"}), "job-a")
    out, storage = policy.claim(raw, "job-a")
    assert storage == tmp / "ckpts" / "job-a" and (storage / MARKER).read_text().strip() == "job-a"
    with pytest.raises(InvalidArgument) as err:  # another job then may not write into it
        policy.apply(_spec(output_dir=str(storage / "checkpoints" / "x")), "job-b")
    assert _fields(err) == ["output_dir"] and "job-a" in str(err.value)
    policy.release([out, storage])
    assert not out.exists() and not storage.exists()
    (tmp / "ckpts" / "job-c").mkdir()
    with pytest.raises(InvalidArgument) as err:
        policy.claim(policy.apply(_spec(checkpoint={"storage_path": "ckpts"}), "job-c"), "job-c")
    assert _fields(err) == ["checkpoint.storage_path"] and not (tmp / "runs" / "job-c").exists()  # nothing stays


@pytest.mark.parametrize("output_dir, says", [
    ("{tmp}", "exists"),
    ("{tmp}/data", "exists"),
    ("{tmp}/runs", "under the jobs root"),
    ("{tmp}/runs/job-a", "under the jobs root"),
    ("{tmp}/runs/job-a/adapter", "under the jobs root"),
    ("{tmp}/runs/job-x", "under the jobs root"),
    ("{tmp}/mine/job-a-copy/sub", None),
    ("{tmp}/elsewhere/out/adapter", "directory of job job-e"),
])
def test_output_dirs_are_new_and_never_another_jobs(roots, output_dir, says):
    data, _, tmp = roots
    policy = PathPolicy([tmp], tmp / "runs")
    _claimed(policy, "job-a")
    (tmp / "elsewhere").mkdir()
    policy.claim({"output_dir": str(tmp / "elsewhere" / "out")}, "job-e")
    spec = _spec(output_dir=output_dir.format(tmp=tmp))
    if says is None:
        assert policy.apply(spec, "job-b")["output_dir"] == output_dir.format(tmp=tmp)
        return
    with pytest.raises(InvalidArgument) as err:
        policy.apply(spec, "job-b")
    assert _fields(err) == ["output_dir"] and says in str(err.value)


def test_inputs_in_another_jobs_directory_need_a_job_reference(roots):
    data, _, tmp = roots
    policy = PathPolicy([tmp], tmp / "runs")
    out = _claimed(policy, "job-a")
    (out / "adapter").mkdir()
    for spec, field in ((_spec(model={"init_adapter": str(out / "adapter")}), "model.init_adapter"),
                        (_spec(data={"train": [str(out / "metrics.jsonl")]}), "data.train.0.path"),
                        (_spec(checkpoint={"storage_path": str(out)}), "checkpoint.storage_path")):
        with pytest.raises(InvalidArgument) as err:
            policy.apply(spec, "job-b")
        assert _fields(err) == [field] and "job-a" in str(err.value)
    assert "job:job-a" in str(_refusal(policy, _spec(model={"init_adapter": str(out / "adapter")})))
    outputs = {"job-a": str(out)}

    def job_output(job_id):
        if job_id not in outputs:
            raise LookupError(f"job:{job_id}: no such job")
        return outputs[job_id]

    raw = policy.apply(_spec(model={"init_adapter": "job:job-a"}), "job-b", job_output)
    assert raw["model"]["init_adapter"] == str(out / "adapter")
    for ref, says in (("job:nope", "no such job"), ("job:job-a/../x", "no such job")):
        with pytest.raises(InvalidArgument, match=says):
            policy.apply(_spec(model={"init_adapter": ref}), "job-b", job_output)
    with pytest.raises(InvalidArgument, match="cannot name other jobs"):
        policy.apply(_spec(model={"init_adapter": "job:job-a"}), "job-b")


def _refusal(policy, spec):
    with pytest.raises(InvalidArgument) as err:
        policy.apply(spec, "job-b")
    return err.value


def test_a_storage_path_of_ones_own_gets_the_job_id(roots):
    data, _, tmp = roots
    policy = PathPolicy([tmp], tmp / "runs")
    assert policy.apply(_spec(checkpoint={"storage_path": "ckpts"}), "job-b")["checkpoint"]["storage_path"] == \
        str(tmp / "ckpts" / "job-b")
    raw = policy.apply(_spec(checkpoint={"storage_path": str(tmp / "runs")}), "job-b")
    assert raw["checkpoint"]["storage_path"] == raw["output_dir"] == str(tmp / "runs" / "job-b")
    assert policy.claim(raw, "job-b") == [tmp / "runs" / "job-b"]  # one directory, claimed once


@pytest.mark.parametrize("key, value, field", [
    ("data", {"train": [{"path": "/etc/passwd"}]}, "tune.search_space.data"),
    ("model", {"name_or_path": "/etc"}, "tune.search_space.model"),
    ("checkpoint", {"storage_path": "/tmp/x"}, "tune.search_space.checkpoint"),
    ("checkpoint.storage_path", "/tmp/x", "tune.search_space.checkpoint.storage_path"),
    ("data.train", {"path": "/etc/passwd"}, "tune.search_space.data.train.choice.1.path"),
    ("data.train", [{"path": "ok.jsonl"}, {"path": "/etc/passwd"}], "tune.search_space.data.train.choice.1.1.path"),
    ("data.train", "/etc/passwd", "tune.search_space.data.train.choice.1"),
    ("data.mix", [{"path": "/etc/passwd", "ratio": 0.2}], "tune.search_space.data.mix.choice.1.0.path"),
    ("data.validation", "../../etc/passwd", "tune.search_space.data.validation.choice.1"),
    ("model.name_or_path", "/etc", "tune.search_space.model.name_or_path.choice.1"),
])
def test_every_search_space_value_is_confined(roots, key, value, field):
    data, _, tmp = roots
    first = {"data": {"train": ["ok.jsonl"]}, "model": {"name_or_path": "org/model"}, "checkpoint": {"keep_last": 2},
             "checkpoint.storage_path": "ck", "data.train": "ok.jsonl", "data.mix": [{"path": "ok.jsonl", "ratio": 0.2}],
             "data.validation": "ok.jsonl", "model.name_or_path": "org/model"}[key]
    spec = _spec(tune={"search": "grid", "search_space": {key: {"choice": [first, value]}}})
    with pytest.raises(InvalidArgument) as err:
        PathPolicy([data], tmp / "runs").apply(spec, "j")
    assert _fields(err) == [field]


def test_search_space_paths_are_resolved_in_every_shape(roots):
    data, _, tmp = roots
    spec = _spec(tune={"search": "grid", "search_space": {"data.train": {"grid": ["a.jsonl", {"path": "b.jsonl"},
                                                                                   [{"path": "c.jsonl", "weight": 2}]]}}})
    grid = PathPolicy([data], tmp / "runs").apply(spec, "j")["tune"]["search_space"]["data.train"]["grid"]
    assert grid == [str(data / "a.jsonl"), {"path": str(data / "b.jsonl")}, [{"path": str(data / "c.jsonl"), "weight": 2}]]


def test_symlinks_out_of_a_root_are_escapes(roots):
    data, _, tmp = roots
    (data / "link").symlink_to(tmp / "outside")
    with pytest.raises(InvalidArgument) as err:
        PathPolicy([data], tmp / "runs").apply(_spec(data={"train": ["link/x.jsonl"]}), "j")
    assert _fields(err) == ["data.train.0.path"]


def test_tracking_cannot_write_to_a_path_the_client_picks(tmp_path):
    policy = PathPolicy([tmp_path], tmp_path / "jobs")
    spec = parse_spec({"model": {"name_or_path": "org/model"}, "data": {"train": str(tmp_path / "t.jsonl")},
                       "tracking": {"tensorboard": {"log_dir": "/etc/x"}, "mlflow": {"tracking_uri": "file:///etc/mlruns"}}})
    with pytest.raises(InvalidArgument) as err:
        policy.apply(spec, "job-1")
    assert {v.field for v in err.value.violations} == {"tracking.tensorboard.log_dir", "tracking.mlflow.tracking_uri"}
    ok = parse_spec({"model": {"name_or_path": "org/model"}, "data": {"train": str(tmp_path / "t.jsonl")},
                     "tracking": {"tensorboard": {}, "mlflow": {"tracking_uri": "http://mlflow:5000"}}})
    assert policy.apply(ok, "job-1")["tracking"]["mlflow"]["tracking_uri"] == "http://mlflow:5000"


def test_a_cache_uri_is_storage_under_an_allowed_prefix_with_the_job_id(roots):
    # Like a local cache_dir, a URI gets the job id (every storage field becomes <storage>/<job id>); one outside the
    # prefixes, or carrying pyarrow options (an endpoint of the client's choosing), is refused like any storage URI.
    data, _, tmp = roots
    policy = PathPolicy([data], tmp / "runs", ("s3://bucket/cache",))
    assert policy.apply(_spec(data={"cache_dir": "s3://bucket/cache/team-a"}), "j")["data"]["cache_dir"] == \
        "s3://bucket/cache/team-a/j"
    for uri, says in (("s3://other/cache", "not under a storage prefix"),
                      ("s3://bucket/cache?endpoint_override=127.0.0.1:9", "no query strings")):
        with pytest.raises(InvalidArgument) as err:
            policy.apply(_spec(data={"cache_dir": uri}), "j")
        assert _fields(err) == ["data.cache_dir"] and says in str(err.value)
