"""Tenants and roles on a real server (gRPC and HTTP on 127.0.0.1, SQLite and PostgreSQL; Ray unreachable, so
jobs in later states are written into the store, and CreateJob is let through Ray's ping where a job must be stored).

Tenant `support` (a submitter and a viewer token, roots confined to support-data/), tenant `search` (a submitter),
an admin of the file, and the server token (an admin too).
"""

import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml

from raysft.local_ray import free_port
from raysft.cli import service_main as main
from raysft.service.jobs.auth import Principal
from raysft.service.jobs.errors import NotFound
from raysft.service.jobs.events import transition
from raysft.service.jobs.quota import Quota
from raysft.service.server import create_server
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import CheckpointRecord, JobRecord, NewEvent, Store
from raysft.service.jobs.tenants import Tenants, TenantsError, hash_token
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from raysft.train.rundata import cache_dir_of
from service_helpers import HOLD, NO_RAY, TOKEN, http_call, put_job

ROOT = Path(__file__).resolve().parents[2]
SUPPORT, SUPPORT_VIEWER, SEARCH, ADMIN = "support-submitter-token-0001", "support-viewer-token-0002", \
    "search-submitter-token-0003", "file-admin-token-0004"
NOT_FOUND = "job {!r} not found; list jobs with `raysft jobs list`"


def md(token):
    return (("authorization", f"Bearer {token}"),)


def tenants_yaml(support_roots, tokens=None) -> str:
    tokens = tokens or {"support": [(SUPPORT, "submitter"), (SUPPORT_VIEWER, "viewer")], "search": [(SEARCH, "submitter")]}
    doc = {"tenants": {name: {"tokens": [{"sha256": hash_token(t), "role": role} for t, role in held]}
                       for name, held in tokens.items()},
           "admins": [{"sha256": hash_token(ADMIN)}]}
    if "support" in doc["tenants"]:
        doc["tenants"]["support"]["roots"] = [str(support_roots)]
        doc["tenants"]["support"]["quota"] = {"max_running_jobs": 2, "max_queued_jobs": 50}
    return yaml.safe_dump(doc)


@pytest.fixture(scope="module")
def support_data(workdir):
    root = workdir / "support-data"
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "data.jsonl").write_text('{"messages": []}\n')
    return root


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, workdir, support_data):
    sqlite = request.param == "sqlite"
    db = f"sqlite:///{workdir}/tenants.db" if sqlite else request.getfixturevalue("postgres").create_database()
    path = workdir / f"tenants-{request.param}.yaml"
    path.write_text(tenants_yaml(support_data))
    # HOLD: the tests store QUEUED jobs and check what each role may do to them; admission moving one to
    # STARTING mid-test (it happened on a loaded machine) would change the answer.
    s = create_server("127.0.0.1:0", db_url=db, token=TOKEN, ray_address=NO_RAY, allowed_roots=[str(workdir)],
                      jobs_root=str(workdir / "runs"), http_port=0, tenants=str(path), limits=HOLD)
    yield s
    s.stop(grace_s=1)


def refused(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def spec_of(root) -> dict:
    return {"model": {"name_or_path": str(root / "model")}, "data": {"train": [{"path": str(root / "data.jsonl")}]}}


def ended_job(server, job_id, tenant, *, state=JobState.FAILED):
    """A job of `tenant` that ran: a checkpoint, and its output_dir under the tenant's jobs directory."""
    out = server.jobs.paths.jobs_root / tenant / job_id
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    spec = {**spec_of(Path("/x")), "output_dir": str(out)}
    job = put_job(server, job_id, state, spec=spec, events=3, tenant=tenant, labels={"suite": "tenants"})

    def checkpoint(_job, ckpts) -> list:
        ckpts[5] = CheckpointRecord(job_id, 5, str(out / "ckpt-5"), {}, time.time())
        return []

    server.store.update(job_id, checkpoint)
    return job


# ------------------------------------------------------------------------------------ isolation

RPCS = {
    "GetJob": lambda s, i, m: s.GetJob(jobs_pb2.GetJobRequest(job_id=i), metadata=m),
    "WatchJob": lambda s, i, m: list(s.WatchJob(jobs_pb2.WatchJobRequest(job_id=i), metadata=m)),
    "ListJobEvents": lambda s, i, m: s.ListJobEvents(jobs_pb2.ListJobEventsRequest(job_id=i), metadata=m),
    "ListCheckpoints": lambda s, i, m: s.ListCheckpoints(jobs_pb2.ListCheckpointsRequest(job_id=i), metadata=m),
    "GetJobLogs": lambda s, i, m: list(s.GetJobLogs(jobs_pb2.GetJobLogsRequest(job_id=i), metadata=m)),
    "CancelJob": lambda s, i, m: s.CancelJob(jobs_pb2.CancelJobRequest(job_id=i), metadata=m),
    "DeleteJob": lambda s, i, m: s.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=i), metadata=m),
    "ResumeJob": lambda s, i, m: s.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=i), metadata=m),
}


@pytest.mark.parametrize("rpc", RPCS)
def test_another_tenants_job_is_not_found_on_every_rpc_as_a_missing_id_is(server, stub, rpc):
    job_id = f"iso-{rpc.lower()}"
    ended_job(server, job_id, "support")
    code, details = refused(lambda: RPCS[rpc](stub, job_id, md(SEARCH)))
    missing = refused(lambda: RPCS[rpc](stub, "no-such-job", md(SEARCH)))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, NOT_FOUND.format(job_id))
    assert missing == (grpc.StatusCode.NOT_FOUND, NOT_FOUND.format("no-such-job"))
    after = server.store.get_job(job_id)  # nothing changed: not cancelled, resumed or deleted
    assert after.state == JobState.FAILED and after.attempt == 1 and len(server.store.events(job_id)) == 3


@pytest.mark.parametrize("rpc", ["GetJob", "WatchJob", "ListJobEvents", "ListCheckpoints", "GetJobLogs", "DeleteJob"])
def test_the_owning_tenant_and_admins_reach_the_job(server, stub, rpc):
    for i, token in enumerate((SUPPORT, SUPPORT_VIEWER, ADMIN, TOKEN)):
        if rpc == "DeleteJob" and token == SUPPORT_VIEWER:
            continue  # a viewer may not (test_viewers_read_but_are_refused_every_change)
        job_id = f"own-{rpc.lower()}-{i}"
        ended_job(server, job_id, "support")
        RPCS[rpc](stub, job_id, md(token))  # no error
        if rpc == "DeleteJob":
            with pytest.raises(NotFound):
                server.store.get_job(job_id)


def test_resume_and_cancel_of_the_owner_get_past_the_tenant_check(server, stub):
    ended_job(server, "own-resume", "support")
    code, details = refused(lambda: RPCS["ResumeJob"](stub, "own-resume", md(SUPPORT)))
    assert code == grpc.StatusCode.UNAVAILABLE and "Ray" in details  # its own job: refused only for want of Ray
    put_job(server, "own-cancel", JobState.QUEUED, tenant="support")
    assert stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="own-cancel"), metadata=md(SUPPORT)).state == jobs_pb2.CANCELLED


def test_list_shows_the_callers_tenant_only_and_admins_every_tenant(server, stub):
    for job_id, tenant in (("list-a", "support"), ("list-b", "search"), ("list-c", "default")):
        put_job(server, job_id, JobState.SUCCEEDED, tenant=tenant, labels={"suite": "list"})

    def listed(token):
        jobs = stub.ListJobs(jobs_pb2.ListJobsRequest(labels={"suite": "list"}), metadata=md(token)).jobs
        return {j.id: j.tenant for j in jobs}

    assert listed(SUPPORT) == listed(SUPPORT_VIEWER) == {"list-a": "support"}
    assert listed(SEARCH) == {"list-b": "search"}
    assert listed(ADMIN) == listed(TOKEN) == {"list-a": "support", "list-b": "search", "list-c": "default"}


def test_the_cli_shows_a_jobs_tenant(server, monkeypatch, capsys):
    put_job(server, "cli-1", JobState.SUCCEEDED, tenant="support")
    monkeypatch.setenv("RAYSFT_TOKEN", SUPPORT)
    assert main(["jobs", "get", "cli-1", "--server", server.address]) == 0
    assert "  tenant: support" in capsys.readouterr().out
    assert main(["jobs", "get", "cli-1", "--server", server.address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tenant"] == "support"
    monkeypatch.setenv("RAYSFT_TOKEN", SEARCH)
    assert main(["jobs", "get", "cli-1", "--server", server.address]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


def test_jobs_carry_their_tenant_and_admins_create_in_the_default_one(server, stub, workdir, support_data, monkeypatch):
    monkeypatch.setattr(server.jobs.runner, "ping", lambda: None)  # Ray "answers": the job is stored (and waits)
    mine = stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec_of(support_data))), metadata=md(SUPPORT))
    admins = stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec_of(workdir))), metadata=md(ADMIN))
    try:
        assert (mine.tenant, admins.tenant) == ("support", "default")
        assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=mine.id), metadata=md(TOKEN)).tenant == "support"
        assert refused(lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id=admins.id), metadata=md(SUPPORT)))[0] == \
            grpc.StatusCode.NOT_FOUND
    finally:
        for job in (mine, admins):
            stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id), metadata=md(TOKEN))


# --------------------------------------------------------------------------- create: refs and keys


def test_job_references_resolve_only_the_callers_tenants_jobs(server, stub, support_data, workdir):
    ended_job(server, "ref-support", "support", state=JobState.SUCCEEDED)
    ended_job(server, "ref-search", "search", state=JobState.SUCCEEDED)

    def validate(token, ref, root):
        spec = {**spec_of(root), "model": {"name_or_path": str(root / "model"), "init_adapter": f"job:{ref}"}}
        return stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec), validate_only=True), metadata=md(token))

    adapter = validate(SUPPORT, "ref-support", support_data).spec.model.init_adapter
    assert adapter == str(workdir / "runs" / "support" / "ref-support" / "adapter")
    code, other = refused(lambda: validate(SUPPORT, "ref-search", support_data))
    _, missing = refused(lambda: validate(SUPPORT, "ref-none", support_data))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert other.replace("ref-search", "ref-none") == missing and "no such job" in other
    assert validate(ADMIN, "ref-search", workdir).spec.model.init_adapter.endswith("search/ref-search/adapter")


def test_a_request_id_is_per_tenant(server, stub, support_data, monkeypatch):
    monkeypatch.setattr(server.jobs.runner, "ping", lambda: None)
    spec = spec_to_proto(spec_of(support_data))
    first = stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec, request_id="shared-key-1"), metadata=md(SUPPORT))
    again = stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec, request_id="shared-key-1"), metadata=md(SUPPORT))
    # The same request from another tenant (its roots allow the paths) is its own job, not a replay of support's.
    theirs = stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec, request_id="shared-key-1"), metadata=md(SEARCH))
    try:
        assert again.id == first.id and theirs.id != first.id and theirs.tenant == "search"
        assert stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec, request_id="shared-key-1"),
                              metadata=md(SEARCH)).id == theirs.id
    finally:
        for job in (first, theirs):
            stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id), metadata=md(TOKEN))


def test_the_store_keeps_each_tenants_request_ids_apart(db_url):
    store = Store(db_url)
    try:
        for tenant in ("default", "support", "search"):
            job, created = store.create_job(JobRecord(id=f"req-{tenant}", kind="train", spec={}, request_id="same",
                                                      tenant=tenant), [NewEvent("info", "x", "y")], "hash")
            assert created and job.tenant == tenant
        assert [store.find_request("same", tenant=t) for t in ("default", "support", "search", "other")] == \
            [("req-default", "hash"), ("req-support", "hash"), ("req-search", "hash"), None]
        assert store.replay_request("same", "hash", tenant="support").id == "req-support"
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ roles


WRITES = {
    "CreateJob": lambda s, i, m: s.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec_of(Path("/x"))),
                                                                        validate_only=True), metadata=m),
    **{name: RPCS[name] for name in ("CancelJob", "DeleteJob", "ResumeJob")},
}


def test_viewers_read_but_are_refused_every_change(server, stub):
    put_job(server, "view-1", JobState.QUEUED, tenant="support")
    for name, call in WRITES.items():
        code, details = refused(lambda: call(stub, "view-1", md(SUPPORT_VIEWER)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and name in details and "viewer" in details
    for name in ("GetJob", "ListJobEvents", "ListCheckpoints"):
        RPCS[name](stub, "view-1", md(SUPPORT_VIEWER))
    assert server.store.get_job("view-1").state == JobState.QUEUED
    server.store.update("view-1", lambda job, _ckpts: [transition(job, JobState.CANCELLED, "the test is over")])
    assert len(RPCS["WatchJob"](stub, "view-1", md(SUPPORT_VIEWER))) == 2  # streams end after the terminal event
    assert RPCS["GetJobLogs"](stub, "view-1", md(SUPPORT_VIEWER)) == []  # never on Ray: no log


# --------------------------------------------------------------------------------------------- HTTP


def http(server, path, method="GET", token=SUPPORT, body=None):
    return http_call(server.http_port, path, method, token, body, timeout_s=10)


HTTP_CALLS = [("GET", ""), ("GET", "/events"), ("GET", "/events:watch"), ("GET", "/checkpoints"), ("GET", "/logs"),
              ("GET", "/trials"), ("POST", ":cancel"), ("POST", ":resume"), ("DELETE", "")]


def test_http_hides_other_tenants_jobs_refuses_viewers_and_shows_the_tenant(server):
    ended_job(server, "http-1", "support")
    for method, suffix in HTTP_CALLS:
        status, body = http(server, f"/v1/jobs/http-1{suffix}", method, token=SEARCH)
        assert (status, body["error"]["message"]) == (404, NOT_FOUND.format("http-1")), (method, suffix)
    status, listed = http(server, "/v1/jobs?label=suite=tenants&page_size=1000", token=SEARCH)
    assert status == 200 and "http-1" not in {j["id"] for j in listed["jobs"]}
    for method, suffix in [("POST", ":cancel"), ("POST", ":resume"), ("DELETE", "")]:
        status, body = http(server, f"/v1/jobs/http-1{suffix}", method, token=SUPPORT_VIEWER)
        assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
    body = {"spec": spec_of(Path("/x")), "validate_only": True}
    status, body = http(server, "/v1/jobs", "POST", token=SUPPORT_VIEWER, body=body)
    assert status == 403
    for method, suffix in HTTP_CALLS[:6]:
        assert http(server, f"/v1/jobs/http-1{suffix}", method, token=SUPPORT_VIEWER)[0] == 200, suffix
    assert http(server, "/v1/jobs/http-1", token=ADMIN)[1]["tenant"] == "support"
    status, listed = http(server, "/v1/jobs?label=suite=tenants&page_size=1000", token=SUPPORT_VIEWER)
    assert "http-1" in {j["id"] for j in listed["jobs"]} and {j["tenant"] for j in listed["jobs"]} == {"support"}
    assert http(server, "/v1/jobs/http-1", "DELETE", token=SUPPORT)[0] == 204


# ------------------------------------------------------------------------------------ roots and dirs


def test_a_tenants_roots_confine_its_paths(server, stub, workdir, support_data):
    def validate(token, root):
        return stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec_of(root)), validate_only=True),
                              metadata=md(token))

    assert validate(SUPPORT, support_data).spec.model.name_or_path == str(support_data / "model")
    code, details = refused(lambda: validate(SUPPORT, workdir))  # the server's root, not support's
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "outside the server's allowed roots" in details
    assert validate(SEARCH, workdir).spec.model.name_or_path == str(workdir / "model")  # no roots: the server's


def test_no_tenant_reads_or_writes_in_another_tenants_jobs_directory(server, stub, workdir):
    (workdir / "runs" / "support" / "loose.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (workdir / "runs" / "support" / "loose.jsonl").write_text('{"messages": []}\n')
    runs = workdir / "runs"
    for field, spec in (("data.train.0.path", {**spec_of(workdir), "data": {"train": [str(runs / "support/loose.jsonl")]}}),
                        ("output_dir", {**spec_of(workdir), "output_dir": str(runs / "support" / "mine")}),
                        ("checkpoint.storage_path", {**spec_of(workdir), "checkpoint": {"storage_path": str(runs)}})):
        code, details = refused(lambda: stub.CreateJob(jobs_pb2.CreateJobRequest(
            spec=spec_to_proto(spec), validate_only=True), metadata=md(SEARCH)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details and "jobs directory" in details, field


def test_two_tenants_default_output_and_cache_dirs_differ(server, stub, workdir, support_data, monkeypatch):
    monkeypatch.setattr(server.jobs.runner, "ping", lambda: None)
    made = [stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec_of(root))), metadata=md(token))
            for token, root in ((SUPPORT, support_data), (SEARCH, workdir), (TOKEN, workdir))]
    try:
        outs = [Path(job.spec.output_dir) for job in made]
        assert outs == [workdir / "runs" / "support" / made[0].id, workdir / "runs" / "search" / made[1].id,
                        workdir / "runs" / made[2].id]  # the default tenant keeps <jobs root>/<id>
        assert all((out / ".raysft-job").read_text().strip() == job.id for out, job in zip(outs, made))
        caches = [cache_dir_of(server.store.get_job(job.id).spec.model) for job in made]
        assert caches == [workdir / "runs" / "support" / ".raysft-cache", workdir / "runs" / "search" / ".raysft-cache",
                          workdir / "runs" / ".raysft-cache"]
    finally:
        for job in made:
            stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id), metadata=md(TOKEN))


# ----------------------------------------------------------------------------- the file and reloads


BAD_FILES = {
    "role": ("tenants: {a: {tokens: [{sha256: '" + "0" * 64 + "', role: owner}]}}", "tenants.a.tokens.0.role"),
    "digest": ("tenants: {a: {tokens: [{sha256: 'abc', role: viewer}]}}", "tenants.a.tokens.0.sha256"),
    "unknown key": ("tenants: {a: {tokens: [{sha256: '" + "0" * 64 + "', role: viewer}], quotas: {}}}", "tenants.a.quotas"),
    "quota": ("tenants: {a: {tokens: [{sha256: '" + "0" * 64 + "', role: viewer}], quota: {max_workers: 0}}}",
              "tenants.a.quota.max_workers"),
    "relative root": ("tenants: {a: {tokens: [{sha256: '" + "0" * 64 + "', role: viewer}], roots: [data]}}",
                      "tenants.a.roots"),
    "name": ("tenants: {Bad/Name: {tokens: [{sha256: '" + "0" * 64 + "', role: viewer}]}}", "tenants.Bad/Name"),
    "default": ("tenants: {default: {tokens: [{sha256: '" + "0" * 64 + "', role: viewer}]}}", "tenants.default"),
    "shared digest": ("tenants: {a: {tokens: [{sha256: '" + "0" * 64 + "', role: viewer}]}}\nadmins: [{sha256: '"
                      + "0" * 64 + "'}]", "admins.0: the same sha256 as tenants.a.tokens.0"),
    "not yaml": ("tenants: [unclosed", "not YAML"),
    "no tokens": ("tenants: {a: {tokens: []}}", "tenants.a.tokens"),
    "empty": ("", "is empty"),
    "not a mapping": ("[a, b]", "(top level)"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_tenants_file_is_an_error_naming_the_field(tmp_path, name):
    text, says = BAD_FILES[name]
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(TenantsError) as err:
        Tenants(tmp_path / "t.yaml")
    assert says in str(err.value) and str(tmp_path / "t.yaml") in str(err.value)


def test_a_tenants_file_others_may_change_is_refused(tmp_path, support_data):
    path = tmp_path / "t.yaml"
    path.write_text(tenants_yaml(support_data))
    path.chmod(0o664)
    with pytest.raises(TenantsError, match="can be changed by other users"):
        Tenants(path)


def test_serve_with_a_bad_tenants_file_exits_2_saying_why(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(BAD_FILES["role"][0])
    code = main(["serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/j.db", "--ray-address", NO_RAY,
                 "--tenants", str(tmp_path / "t.yaml")])
    assert code == 2 and "tenants.a.tokens.0.role" in capsys.readouterr().err


def test_quotas_and_roots_of_the_file(support_data, tmp_path):
    (tmp_path / "t.yaml").write_text(tenants_yaml(support_data))
    tenants = Tenants(tmp_path / "t.yaml")
    assert tenants.names == ["search", "support"]
    assert (tenants.quota("support").max_running_jobs, tenants.quota("support").max_queued_jobs,
            tenants.quota("support").max_workers) == (2, 50, None)
    assert tenants.quota("search") == tenants.quota("default") == tenants.quota("gone") == Quota()
    assert tenants.tenant("support").roots == (str(support_data.resolve()),) and tenants.tenant("search").roots is None
    assert tenants.principal(SUPPORT_VIEWER.encode()) == Principal("support/viewer", "support", "viewer")
    assert tenants.principal(ADMIN.encode()).admin and tenants.principal(b"nobody") is None


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)  # as editors save: a new inode


def test_the_file_is_reloaded_when_it_changes_and_a_bad_one_keeps_the_old(server, stub, workdir, caplog):
    path = server.tenants.path
    newcomer = "newcomer-token-0005"
    try:
        _rewrite(path, tenants_yaml(workdir / "support-data", {"support": [(SUPPORT, "submitter")],
                                                               "newco": [(newcomer, "viewer")]}))
        deadline = time.time() + 10
        while True:  # checked at most once a second
            try:
                stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(newcomer))
                break
            except grpc.RpcError:
                assert time.time() < deadline
                time.sleep(0.2)
        assert refused(lambda: stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(SEARCH)))[0] == \
            grpc.StatusCode.UNAUTHENTICATED  # removed from the file
        with caplog.at_level(logging.ERROR, logger="raysft.service.jobs.tenants"):
            _rewrite(path, "tenants: {newco: {tokens: [{sha256: nope, role: viewer}]}}")
            time.sleep(1.2)
            stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(newcomer))  # still in force
            assert server.tenants.reload() is False  # SIGHUP's path: the same answer
        assert "not reloaded" in caplog.text and "tenants.newco.tokens.0.sha256" in caplog.text
        stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(newcomer))
    finally:
        _rewrite(path, tenants_yaml(workdir / "support-data"))
        assert server.tenants.reload() is True
    stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(SEARCH))


def test_sighup_reloads_the_file_of_a_running_server(tmp_path, support_data):
    path = tmp_path / "tenants.yaml"
    path.write_text(tenants_yaml(support_data))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "raysft.service", "serve", "--port", str(port), "--db",
                             f"sqlite:///{tmp_path}/j.db", "--ray-address", NO_RAY, "--allowed-root", str(tmp_path),
                             "--tenants", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_path, text=True)
    other = "search-submitter-token-0009"  # as long as SEARCH: the file keeps its size
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            _until(lambda: stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(SEARCH), timeout=2), 60)
            before = os.stat(path)
            with open(path, "r+") as f:  # the same inode, size and mtime: only the signal can tell
                f.write(path.read_text().replace(hash_token(SEARCH), hash_token(other)))
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            proc.send_signal(signal.SIGHUP)
            _until(lambda: stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(other), timeout=2), 10)
            assert refused(lambda: stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md(SEARCH), timeout=2))[0] == \
                grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "tenants file" in out and "reloaded" in out


def _until(call, deadline_s):
    end = time.time() + deadline_s
    while True:
        try:
            return call()
        except grpc.RpcError:
            if time.time() > end:
                raise
            time.sleep(0.2)


def test_hash_token_prints_the_digest_the_file_holds(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("my-token\n"))
    assert main(["tenants", "hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"my-token").hexdigest()
