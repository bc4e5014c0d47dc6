"""Hostile specs against a real job server (127.0.0.1, token auth, SQLite): confinement, job isolation, caps.

Each attack asserts the refusal (status code and the field named in the BadRequest) and that the server still
answers another client afterwards. The server's runner points at a Ray address where nothing listens: every
refusal here happens before Ray would be asked.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from raysft.local_ray import free_port
from raysft.cli import service_main as main
from raysft.service.jobs.limits import Limits
from raysft.service.jobs.paths import MARKER
from raysft.service.server import create_server
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from service_helpers import AUTH, NO_RAY, TOKEN, put_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TUNE = {"search": "grid", "scheduler": "none"}


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    return tmp_path_factory.mktemp("outside")


@pytest.fixture(scope="module")
def server(workdir):
    running = create_server("127.0.0.1:0", db_url=f"sqlite:///{workdir}/attacks.db", token=TOKEN, ray_address=NO_RAY,
                            allowed_roots=[str(workdir)], jobs_root=str(workdir / "runs"),
                            allowed_storage=("s3://bucket/prefix",),
                            limits=Limits(max_workers=2, max_resources_per_worker={"CPU": 4}, max_trials=4,
                                          max_active_jobs=2, max_running_jobs=0))
    done = workdir / "runs" / "victim-done"
    (done / "adapter").mkdir(parents=True)
    (done / MARKER).write_text("victim-done\n")
    custom = workdir / "teams" / "victim-custom"
    custom.mkdir(parents=True)
    (custom / MARKER).write_text("victim-custom\n")
    put_job(running, "victim-done", JobState.SUCCEEDED,
            spec={"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]}, "output_dir": str(done)})
    put_job(running, "victim-custom", JobState.RUNNING,
            spec={"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]}, "output_dir": str(custom)})
    put_job(running, "victim-queued", JobState.QUEUED)
    yield running
    running.stop(grace_s=1)


@pytest.fixture(scope="module")
def bystander(server):
    """Another client, on its own connection."""
    with grpc.insecure_channel(server.address) as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)


def _spec(**sections):
    raw = {"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def _create(stub, raw, *, validate_only=False, kind=jobs_pb2.JOB_KIND_UNSPECIFIED):
    return stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(raw), validate_only=validate_only, kind=kind),
                          metadata=AUTH, timeout=30)


def _refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> tuple[list[str], str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    fields = []
    status = rpc_status.from_call(err.value)
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields, err.value.details()


def _still_serves(bystander, server):
    assert bystander.GetJob(jobs_pb2.GetJobRequest(job_id="victim-done"), metadata=AUTH, timeout=10).state == jobs_pb2.SUCCEEDED
    listed = bystander.ListJobs(jobs_pb2.ListJobsRequest(), metadata=AUTH, timeout=10).jobs
    assert {"victim-done", "victim-custom"} <= {j.id for j in listed}
    assert not [j for j in listed if j.id.startswith("raysft-")]  # no attack was stored


def _attack(stub, bystander, server, raw, field, *, says="", **kw):
    fields, message = _refused(lambda: _create(stub, raw, **kw))
    assert fields == [field], message
    assert says in message
    _still_serves(bystander, server)


# ------------------------------------------------------------------------------- storage locations

@pytest.mark.parametrize("uri_of", [
    lambda out: f"file://{out}/ck",  # a file URI outside the roots
    lambda out: f"{out}/a://b",  # contains "://", and pyarrow reads it as a local path
    lambda out: "s3://bucket/prefix?endpoint_override=127.0.0.1:9&scheme=http",  # options in the query string
    lambda out: "s3://attacker/ckpt",  # a bucket the operator did not allow
    lambda out: "s3://bucket/prefix/../../other",  # climbing out of the prefix
    lambda out: "s3://key:secret@bucket/prefix",  # user info in the authority
], ids=["file-uri-outside", "scheme-mark-in-a-local-path", "query-options", "other-bucket", "dot-dot", "user-info"])
def test_checkpoint_storage_outside_the_roots_or_prefixes_is_refused(stub, bystander, server, outside, uri_of):
    _attack(stub, bystander, server, _spec(checkpoint={"storage_path": uri_of(outside)}), "checkpoint.storage_path")


def test_data_from_a_remote_uri_outside_the_prefixes_is_refused(stub, bystander, server):
    _attack(stub, bystander, server, _spec(data={"train": ["s3://attacker/data.jsonl"]}), "data.train.0.path",
            says="--allowed-storage")


def test_storage_under_an_allowed_prefix_gets_the_job_id_and_a_file_uri_its_path(stub, bystander, server, workdir):
    spec = _create(stub, _spec(checkpoint={"storage_path": "s3://bucket/prefix/team"}), validate_only=True).spec
    assert spec.checkpoint.storage_path == "s3://bucket/prefix/team"  # validate-only: the job id comes at creation
    spec = _create(stub, _spec(checkpoint={"storage_path": f"file://{workdir}/ck"}), validate_only=True).spec
    assert spec.checkpoint.storage_path == str(workdir / "ck")
    _still_serves(bystander, server)


def test_storage_inside_another_jobs_directory_is_refused(stub, bystander, server, workdir):
    _attack(stub, bystander, server, _spec(checkpoint={"storage_path": str(workdir / "teams" / "victim-custom")}),
            "checkpoint.storage_path", says="victim-custom")


# ------------------------------------------------------------------------------------ tune campaigns

def test_a_tune_job_reading_etc_passwd_through_a_section_key_is_refused(stub, bystander, server):
    raw = _spec(tune={**TUNE, "search_space": {"data": {"grid": [{"train": [{"path": "/etc/passwd"}]}]}}})
    _attack(stub, bystander, server, raw, "tune.search_space.data", kind=jobs_pb2.TUNE)


def test_a_tune_job_reading_etc_passwd_through_a_source_dict_is_refused(stub, bystander, server):
    raw = _spec(tune={**TUNE, "search_space": {"data.train": {"grid": ["data.jsonl", {"path": "/etc/passwd"}]}}})
    _attack(stub, bystander, server, raw, "tune.search_space.data.train.grid.1.path", kind=jobs_pb2.TUNE)


def test_a_tune_job_writing_checkpoints_outside_the_roots_is_refused(stub, bystander, server, outside):
    raw = _spec(tune={**TUNE, "search_space": {"checkpoint": {"grid": [{"storage_path": str(outside)}]}}})
    _attack(stub, bystander, server, raw, "tune.search_space.checkpoint", kind=jobs_pb2.TUNE)
    raw = _spec(tune={**TUNE, "search_space": {"checkpoint.storage_path": {"grid": [str(outside)]}}})
    _attack(stub, bystander, server, raw, "tune.search_space.checkpoint.storage_path", kind=jobs_pb2.TUNE)


# ------------------------------------------------------------------------------------ job isolation

@pytest.mark.parametrize("where, says", [
    (lambda w: w, "exists"),  # the root itself
    (lambda w: w / "runs" / "victim-done", "under the jobs root"),  # another job's directory
    (lambda w: w / "runs" / "raysft-0123456789ab", "under the jobs root"),  # a made-up job's directory
    (lambda w: w / "teams" / "victim-custom" / "adapter", "directory of job victim-custom"),  # inside another job's
    (lambda w: w / "model", "exists"),  # any existing directory
], ids=["root", "other-job", "jobs-root-slot", "inside-other-job", "existing-dir"])
def test_output_dirs_of_roots_other_jobs_or_existing_directories_are_refused(stub, bystander, server, workdir, where, says):
    _attack(stub, bystander, server, _spec(output_dir=str(where(workdir))), "output_dir", says=says)


def test_an_adapter_in_another_jobs_directory_needs_its_job_id(stub, bystander, server, workdir):
    _attack(stub, bystander, server, _spec(model={"init_adapter": str(workdir / "runs" / "victim-done" / "adapter")}),
            "model.init_adapter", says="job:victim-done")
    job = _create(stub, _spec(model={"init_adapter": "job:victim-done"}), validate_only=True)
    assert job.spec.model.init_adapter == str(workdir / "runs" / "victim-done" / "adapter")


@pytest.mark.parametrize("ref, says", [("job:victim-custom", "RUNNING"), ("job:nope", "no such job"),
                                       ("job:../victim-done", "no such job")])
def test_job_references_to_unfinished_or_unknown_jobs_are_refused(stub, bystander, server, ref, says):
    _attack(stub, bystander, server, _spec(model={"init_adapter": ref}), "model.init_adapter", says=says)


def test_reading_the_jobs_root_state_file_as_data_is_refused(stub, bystander, server, workdir):
    _attack(stub, bystander, server, _spec(data={"train": [str(workdir / "runs" / ".ray-cluster.json")]}),
            "data.train.0.path", says="directory of job")


# --------------------------------------------------------------------------------- names and paths

@pytest.mark.parametrize("sections, field", [
    ({"model": {"name_or_path": "org/model\n[raysft-event] {\"type\": \"metrics\", \"step\": 1e400}"}}, "model.name_or_path"),
    ({"data": {"train": ["data\x1b]0;owned\x07.jsonl"]}}, "data.train.0.path"),
    ({"output_dir": "runs2/a\u202eb"}, "output_dir"),
    ({"model": {"name_or_path": "a/../../etc"}}, "model.name_or_path"),  # shaped like a hub id, climbs out
], ids=["newline-in-hub-id", "terminal-escape-in-path", "bidi-override", "hub-id-shaped-escape"])
def test_control_characters_and_disguised_paths_are_refused(stub, bystander, server, sections, field):
    _attack(stub, bystander, server, _spec(**sections), field)


def test_a_job_id_with_control_characters_is_refused(stub, bystander, server):
    fields, _ = _refused(lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id="x\n\x1b[2J"), metadata=AUTH, timeout=10))
    assert fields == ["job_id"]
    _still_serves(bystander, server)


def test_paths_are_passed_on_resolved_so_a_later_symlink_swap_changes_nothing(stub, bystander, server, workdir):
    link = workdir / "link.jsonl"
    link.symlink_to(workdir / "data.jsonl")
    spec = _create(stub, _spec(data={"train": ["link.jsonl"]}), validate_only=True).spec
    link.unlink()
    link.symlink_to("/etc/passwd")  # after the check: the resolved spec does not name the link
    assert spec.data.train[0].path == str(workdir / "data.jsonl")
    _still_serves(bystander, server)


# ------------------------------------------------------------------------------------------- caps

@pytest.mark.parametrize("sections, field, kind", [
    ({"scaling": {"num_workers": 64}, "train": {"micro_batch_size": 1, "global_batch_size": 64}}, "scaling.num_workers",
     jobs_pb2.TRAIN),
    ({"scaling": {"resources_per_worker": {"CPU": 64}}}, "scaling.resources_per_worker.CPU", jobs_pb2.TRAIN),
    ({"scaling": {"resources_per_worker": {"GPU": 1}}}, "scaling.resources_per_worker.GPU", jobs_pb2.TRAIN),
    ({"tune": {"search": "random", "num_samples": 1000, "search_space": {"train.learning_rate": {"loguniform": [1e-5, 1e-3]}}}},
     "tune.num_samples", jobs_pb2.TUNE),
    ({"tune": {**TUNE, "search_space": {"train.seed": {"grid": [1, 2, 3]}, "train.epochs": {"grid": [1, 2]}}}},
     "tune.search_space", jobs_pb2.TUNE),
], ids=["workers", "cpus", "unlisted-resource", "samples", "grid"])
def test_specs_over_the_operators_caps_are_refused_naming_field_and_cap(stub, bystander, server, sections, field, kind):
    fields, message = _refused(lambda: _create(stub, _spec(**sections), kind=kind))
    assert fields == [field] and "--max-" in message
    _still_serves(bystander, server)


def test_a_job_over_the_active_jobs_cap_is_resource_exhausted(stub, bystander, server, workdir):
    before = sorted(p.name for p in (workdir / "runs").iterdir())
    fields, message = _refused(lambda: _create(stub, _spec()), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert fields == [] and "--max-active-jobs" in message
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == before  # no directory claimed for it
    _still_serves(bystander, server)


# ------------------------------------------------------------------------------- loopback and tokens

def _start(tmp_path, *extra) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "RAYSFT_TOKEN_FILE": str(tmp_path / "home" / "token"), "PYTHONPATH": str(ROOT)}
    env.pop("RAYSFT_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "raysft.service", "serve", "--port", str(port), "--db",
                             f"sqlite:///{tmp_path}/j.db", "--ray-address", NO_RAY, "--allowed-root", str(tmp_path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, text=True)
    return proc, port


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


def _answers(port, deadline_s=60.0):
    end = time.time() + deadline_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        while True:
            try:
                stub.ListJobs(jobs_pb2.ListJobsRequest(), timeout=2)
                return "no auth"
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    return "UNAUTHENTICATED"
                if time.time() > end:
                    raise


def test_loopback_without_a_token_file_creates_one_and_refuses_other_local_users(tmp_path, capsys, monkeypatch):
    proc, port = _start(tmp_path)
    try:
        assert _answers(port) == "UNAUTHENTICATED"  # a local user without the token gets nowhere
        token_file = tmp_path / "home" / "token"
        assert token_file.stat().st_mode & 0o777 == 0o600 and len(token_file.read_text().strip()) >= 32
        monkeypatch.delenv("RAYSFT_TOKEN", raising=False)
        monkeypatch.setenv("RAYSFT_TOKEN_FILE", str(token_file))
        assert main(["jobs", "list", "--server", f"127.0.0.1:{port}"]) == 0  # the CLI reads the same file
    finally:
        out = _stop(proc)
    assert f"created token file {token_file} (mode 0600)" in out


def test_no_auth_only_with_an_explicit_flag(tmp_path):
    proc, port = _start(tmp_path, "--insecure-no-auth")
    try:
        assert _answers(port) == "no auth"
    finally:
        out = _stop(proc)
    assert "--insecure-no-auth: any local user" in out and not (tmp_path / "home" / "token").exists()


def test_a_token_file_others_can_read_is_refused(tmp_path, capsys, monkeypatch):
    planted = tmp_path / "token"
    planted.write_text("known-to-others-0123456789abcdef\n")
    planted.chmod(0o644)
    monkeypatch.setenv("RAYSFT_TOKEN_FILE", str(planted))
    code = main(["serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/j.db", "--ray-address", NO_RAY])
    assert code == 2 and "others can read it" in capsys.readouterr().err
