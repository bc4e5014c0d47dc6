"""The HTTP/JSON API and /metrics on a real server (real gRPC + HTTP on 127.0.0.1, real SQLite; Ray unreachable,
so jobs in later states are written into the store as the supervisor would)."""

import json
import urllib.error
import urllib.request

import grpc
import pytest

from raysft.service.server import create_server
from raysft.service.jobs.states import JobState
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from service_helpers import AUTH, HOLD, NO_RAY, TOKEN, put_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(workdir):
    s = create_server("127.0.0.1:0", db_url=f"sqlite:///{workdir}/http.db", token=TOKEN, ray_address=NO_RAY,
                      allowed_roots=[str(workdir)], jobs_root=str(workdir / "runs"), http_port=0, limits=HOLD)
    yield s
    s.stop(grace_s=1)


def call(server, path, method="GET", body=None, token=TOKEN, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if r.headers.get("content-type", "").startswith("application/json") else text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_token_is_required_and_checked(server):
    assert call(server, "/v1/jobs", token=None)[0] == 401
    status, body = call(server, "/v1/jobs", token="wrong")
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED" and "invalid token" in body["error"]["message"]
    assert call(server, "/v1/jobs")[0] == 200


def test_bad_spec_gives_400_with_the_field_paths_grpc_gives(server, workdir):
    spec = {"model": {"name_or_path": str(workdir / "model")}, "data": {"train": str(workdir / "data.jsonl")},
            "train": {"learning_rate": -1}}
    status, body = call(server, "/v1/jobs", "POST", {"spec": spec, "validate_only": True})
    assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT"
    http_fields = {v["field"]: v["message"] for v in body["error"]["violations"]}
    with grpc.insecure_channel(server.address) as ch:
        from raysft.service.api.specproto import spec_to_proto
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        with pytest.raises(grpc.RpcError) as err:
            # train.epoch is not even a proto field: gRPC clients fail converting; compare the shared field
            jobs_pb2_grpc.JobServiceStub(ch).CreateJob(jobs_pb2.CreateJobRequest(
                spec=spec_to_proto({**spec, "train": {"learning_rate": -1}}), validate_only=True), metadata=AUTH)
        status_proto = rpc_status.from_call(err.value)
        bad = error_details_pb2.BadRequest()
        status_proto.details[0].Unpack(bad)
    grpc_fields = {v.field: v.description for v in bad.field_violations}
    assert http_fields == grpc_fields and "train.learning_rate" in http_fields
    status, body = call(server, "/v1/jobs", "POST", {"spec": {**spec, "train": {"epoch": 3}}})
    assert status == 400 and "did you mean 'epochs'" in body["error"]["violations"][0]["message"]


def test_validate_only_returns_the_resolved_job_and_stores_nothing(server, workdir):
    spec = {"model": {"name_or_path": str(workdir / "model")}, "data": {"train": str(workdir / "data.jsonl")}}
    status, body = call(server, "/v1/jobs", "POST", {"spec": spec, "validate_only": True, "labels": {"team": "a"}})
    assert status == 200, body
    assert body["id"] == "" and body["labels"] == {"team": "a"} and (body["priority"], body["queue_position"]) == (5, 0)
    assert call(server, "/v1/jobs", "POST", {"spec": spec, "validate_only": True, "priority": 9})[1]["priority"] == 9
    status, body = call(server, "/v1/jobs", "POST", {"spec": spec, "validate_only": True, "priority": 10})
    assert status == 400 and body["error"]["violations"][0]["field"] == "priority"
    assert call(server, "/v1/jobs")[1]["jobs"] == []


def test_reads_filters_paging_and_state_conflicts(server):
    put_job(server, "raysft-h1", JobState.RUNNING, labels={"team": "a"}, events=3, progress={"step": 2, "total_steps": 8})
    put_job(server, "raysft-h2", JobState.SUCCEEDED, labels={"team": "b"})
    status, body = call(server, "/v1/jobs/raysft-h1")
    assert status == 200 and body["state"] == "RUNNING" and body["progress"]["step"] == 2 and body["spec"]["model"]
    assert [j["id"] for j in call(server, "/v1/jobs?state=RUNNING")[1]["jobs"]] == ["raysft-h1"]
    assert [j["id"] for j in call(server, "/v1/jobs?label=team=b")[1]["jobs"]] == ["raysft-h2"]
    first = call(server, "/v1/jobs?page_size=1")[1]
    assert len(first["jobs"]) == 1 and first["next_page_token"]
    second = call(server, f"/v1/jobs?page_size=1&page_token={first['next_page_token']}")[1]
    assert second["jobs"][0]["id"] != first["jobs"][0]["id"]
    assert call(server, "/v1/jobs?state=BOGUS")[0] == 400
    assert call(server, "/v1/jobs/raysft-none")[0] == 404
    status, body = call(server, "/v1/jobs/raysft-h1", "DELETE")
    assert status == 409 and "cancel it first" in body["error"]["message"]
    events = call(server, "/v1/jobs/raysft-h1/events?after=1")[1]["events"]
    assert [e["sequence"] for e in events] == [2, 3]
    assert call(server, "/v1/jobs/raysft-h1/checkpoints")[1] == {"checkpoints": []}
    assert call(server, "/v1/jobs/raysft-h2", "DELETE")[0] == 204
    assert call(server, "/v1/jobs/raysft-h2")[0] == 404


def test_resume_refuses_an_active_job_and_one_without_a_checkpoint(server):
    put_job(server, "raysft-r1", JobState.RUNNING)
    put_job(server, "raysft-r2", JobState.FAILED)
    status, body = call(server, "/v1/jobs/raysft-r1:resume", "POST")
    assert status == 409 and body["error"]["code"] == "FAILED_PRECONDITION"
    status, body = call(server, "/v1/jobs/raysft-r2:resume", "POST")
    assert status == 409 and "checkpoint" in body["error"]["message"]
    assert call(server, "/v1/jobs/raysft-none:resume", "POST")[0] == 404
    assert call(server, "/v1/jobs/raysft-r2")[1]["state"] == "FAILED"  # nothing changed


def test_sse_stream_of_an_ended_job_sends_its_events_then_ends(server):
    put_job(server, "raysft-h3", JobState.SUCCEEDED, events=2)
    status, text = call(server, "/v1/jobs/raysft-h3/events:watch")
    assert status == 200
    blocks = [b for b in text.split("\n\n") if b.startswith("id:")]
    assert [b.split("\n")[0] for b in blocks] == ["id: 1", "id: 2"]
    assert json.loads(blocks[0].split("data: ")[1])["message"] == "event 0"
    assert text.rstrip().endswith('data: {"reason": "terminal"}')


def test_request_bodies_are_capped(server):
    status, body = call(server, "/v1/jobs", "POST", raw=b"{" + b" " * (300 * 1024) + b"}")
    assert status == 413 and "over" in body["error"]["message"]


def test_metrics_count_jobs_and_calls_of_both_transports(server):
    put_job(server, "raysft-h6", JobState.QUEUED)
    with grpc.insecure_channel(server.address) as ch:
        jobs_pb2_grpc.JobServiceStub(ch).GetJob(jobs_pb2.GetJobRequest(job_id="raysft-h6"), metadata=AUTH)
    call(server, "/v1/jobs/raysft-h6")
    status, text = call(server, "/metrics", token=None)
    assert status == 200
    lines = text.splitlines()
    assert 'raysft_jobs{state="QUEUED"} 1.0' in lines and "raysft_queue_length 1.0" in lines
    assert any(l.startswith('raysft_rpc_duration_seconds_count{code="OK",method="/raysft.v1.JobService/GetJob"}') for l in lines)
    assert any(l.startswith('raysft_rpc_duration_seconds_count{code="200",method="GET /v1/jobs/{job_id}"}') for l in lines)
    created = next(l for l in lines if l.startswith("raysft_jobs_created_total"))
    assert float(created.split()[1]) >= 4  # the jobs this module stored
