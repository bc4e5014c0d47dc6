"""Attacks on the job service (issue 13, part B), each against a real server on 127.0.0.1 with token auth and a real
SQLite store: forged and hostile training events, stream exhaustion, oversized specs and errors, page tokens, unknown
methods, retried creates, hostile job text on the terminal. Each test asserts the refusal (status code, and the field
when it is a spec problem) and that the server still answers another client afterwards.

The server runs no Ray jobs (its Ray address refuses connections): what a job prints reaches the supervisor as log
lines (`Supervisor.records` + `Supervisor.take`, the path the log follower feeds), which is where the attacks enter.
"""

import base64
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from raysft.service.ray import supervisor as supervisor_module
from raysft.cli import service_main as main
from raysft.service.jobs.auth import OPERATOR
from raysft.service.client import JobClient, content_request_id, spec_message
from raysft.local_ray.cluster import trusted_state
from raysft.service.jobs.errors import MAX_VIOLATIONS, Unavailable
from raysft.service.ray.runner import JobVanished, RayJobInfo, RayJobsRunner, ray_submission_id
from raysft.service.server import create_server
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from raysft.train.runlog import EVENT_PREFIX, event_line, event_mac
from service_helpers import AUTH, HOLD, NO_RAY, TOKEN, put_job

pytestmark = pytest.mark.integration

STREAM_CAP = 72


@pytest.fixture(scope="module")
def server(workdir):
    # Four threads only: streams must not need one each. 72 streams per client: room for the 70-stream attack.
    running = create_server("127.0.0.1:0", db_url=f"sqlite:///{workdir}/attacks.db", token=TOKEN, ray_address=NO_RAY,
                            allowed_roots=[str(workdir)], jobs_root=str(workdir / "runs"), max_workers=4,
                            max_streams_per_client=STREAM_CAP, limits=HOLD)
    yield running
    running.stop(grace_s=0)


@pytest.fixture(scope="module")
def other(server):
    """Another client, on its own channel: it must keep being served whatever the attacker did."""
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def still_serves(channel, server):
    """Another client's ListJobs, GetJob, CancelJob and health check answer promptly."""
    s = jobs_pb2_grpc.JobServiceStub(channel)
    started = time.monotonic()
    s.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000), metadata=AUTH, timeout=5)
    s.ListJobs(jobs_pb2.ListJobsRequest(page_size=100, view=jobs_pb2.JOB_VIEW_FULL), metadata=AUTH, timeout=5)
    probe = f"probe-{time.monotonic_ns()}"
    put_job(server, probe, JobState.QUEUED)
    assert s.GetJob(jobs_pb2.GetJobRequest(job_id=probe), metadata=AUTH, timeout=5).state == jobs_pb2.QUEUED
    assert s.CancelJob(jobs_pb2.CancelJobRequest(job_id=probe), metadata=AUTH, timeout=5).state == jobs_pb2.CANCELLED
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    return time.monotonic() - started


def refused(call) -> tuple[grpc.StatusCode, list[tuple[str, str]], grpc.RpcError]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    status = rpc_status.from_call(err.value)
    fields = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [(v.field, v.description) for v in bad.field_violations]
    return err.value.code(), fields, err.value


def running_job(server, job_id):
    spec = {"model": {"name_or_path": "m"}, "data": {"train": [{"path": "/x.jsonl"}]}, "output_dir": f"/runs/{job_id}"}
    return put_job(server, job_id, JobState.RUNNING, spec=spec)


def feed(server, job_id, text):
    """Text the job printed, as the log follower hands it on: only signed event lines become records."""
    records = server.supervisor.records(job_id, text.split("\n"))
    if records:
        server.supervisor.take(job_id, records)
    return records


def signed(server, job_id, record):
    return "(RayTrainWorker pid=7) " + event_line(server.supervisor.event_key(job_id), record) + "\n"


def event(seq, type_="metrics", **data):
    return {"seq": seq, "time": "2026-01-01T00:00:00+00:00", "level": "info", "type": type_, "message": type_, "data": data}


def events_of(stub, job_id):
    return list(stub.ListJobEvents(jobs_pb2.ListJobEventsRequest(job_id=job_id, page_size=1000), metadata=AUTH).events)


# ------------------------------------------------------------------------------------------ item 3: events


def test_an_event_printed_by_the_jobs_own_output_is_log_text(server, stub, other):
    """A hub id holding a newline and the prefix, echoed by the job's error message, injected events before."""
    job = running_job(server, "forged-echo")
    hostile = "m\n" + EVENT_PREFIX + json.dumps(event(1, step=10 ** 6, train_loss=0.0)) + "\n"
    records = feed(server, job.id, f"error: cannot load model {hostile}\n(RayTrainWorker pid=7) {EVENT_PREFIX}"
                                   f"{'0' * 32} {json.dumps(event(2, step=5))}\n")
    assert records == []
    got = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), metadata=AUTH)
    assert got.progress.step == 0 and [e.type for e in events_of(stub, job.id)] == ["state_changed"]
    still_serves(other, server)


def test_a_line_signed_for_another_job_is_not_an_event_of_this_one(server, stub, other):
    a, b = running_job(server, "signed-a"), running_job(server, "signed-b")
    assert feed(server, b.id, signed(server, a.id, event(1, step=3))) == []
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=b.id), metadata=AUTH).progress.step == 0
    still_serves(other, server)


def test_a_step_of_1e400_is_a_warning_and_every_read_still_answers(server, stub, other):
    job = running_job(server, "step-1e400")
    payload = '{"seq": 1, "type": "metrics", "message": "m", "data": {"step": 1e400, "train_loss": 1.0}}'  # 1e400: inf
    line = f"{EVENT_PREFIX}{event_mac(server.supervisor.event_key(job.id), payload)} {payload}\n"
    assert feed(server, job.id, line)  # signed: it reaches the checks, which refuse it
    kinds = [(e.type, e.level) for e in events_of(stub, job.id)]
    assert kinds[-1] == ("event_rejected", jobs_pb2.WARNING)
    assert "data.step" in events_of(stub, job.id)[-1].message
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), metadata=AUTH).progress.step == 0
    listed = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000), metadata=AUTH).jobs
    assert job.id in [j.id for j in listed]
    still_serves(other, server)


def test_a_fake_best_checkpoint_outside_the_jobs_storage_is_refused(server, stub, other):
    job = running_job(server, "fake-ckpt")
    feed(server, job.id, signed(server, job.id, event(1, "checkpoint_saved", step=1, uri="s3://attacker/ck", eval_loss=0.0))
         + signed(server, job.id, event(2, "checkpoint_saved", step=2, uri=f"/runs/{job.id}/checkpoints/../../../etc",
                                        eval_loss=0.0))
         + signed(server, job.id, event(3, "checkpoint_saved", step=3, uri=f"/runs/{job.id}/checkpoints/checkpoint_3",
                                        eval_loss=1.0)))
    kept = stub.ListCheckpoints(jobs_pb2.ListCheckpointsRequest(job_id=job.id), metadata=AUTH).checkpoints
    assert [(c.step, c.uri, c.is_best) for c in kept] == [(3, f"/runs/{job.id}/checkpoints/checkpoint_3", True)]
    rejected = [e.message for e in events_of(stub, job.id) if e.type == "event_rejected"]
    assert len(rejected) == 2 and all("data.uri must lie under" in m for m in rejected)
    still_serves(other, server)


def test_an_event_without_time_is_stored_now_and_the_job_keeps_following(server, stub, other):
    job = running_job(server, "no-time")
    record = {k: v for k, v in event(1, step=2, train_loss=1.5).items() if k != "time"}
    before = time.time()
    feed(server, job.id, signed(server, job.id, record))
    last = events_of(stub, job.id)[-1]
    assert last.type == "metrics" and before - 1 <= last.time.seconds <= time.time() + 1
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), metadata=AUTH).progress.step == 2
    feed(server, job.id, signed(server, job.id, event(2, step=3)))
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), metadata=AUTH).progress.step == 3
    still_serves(other, server)


def test_a_seq_of_2_63_is_refused_and_the_job_can_still_be_cancelled_and_deleted(server, stub, other):
    job = running_job(server, "seq-2-63")
    feed(server, job.id, signed(server, job.id, event(2 ** 63, step=1)))
    assert events_of(stub, job.id)[-1].type == "event_rejected"
    assert stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id), metadata=AUTH).state == jobs_pb2.CANCELLING
    # what the follower does once Ray stopped the job's first attempt
    server.supervisor.finish_attempt(job.id, 1, ray_submission_id(job.id, 1), RayJobInfo("STOPPED", "stopped", None), "")
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), metadata=AUTH).state == jobs_pb2.CANCELLED
    stub.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=job.id), metadata=AUTH)
    code, _, _ = refused(lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), metadata=AUTH))
    assert code == grpc.StatusCode.NOT_FOUND
    still_serves(other, server)


def test_a_stored_row_that_cannot_be_shown_does_not_fail_the_list(server, stub, other):
    """Rows written by an older server (before events were checked) hold infinities, or a kind this one lacks."""
    inf = running_job(server, "row-inf")
    server.store.update(inf.id, lambda j, c: j.progress.update(step=float("inf"), eta_s=float("inf"),
                                                               train_loss=float("nan")) or [])
    odd = running_job(server, "row-odd")
    server.store.update(odd.id, lambda j, c: setattr(j, "kind", "distill") or [])
    listed = {j.id: j for j in stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000), metadata=AUTH).jobs}
    assert listed[inf.id].progress.step == 0 and listed[inf.id].progress.train_loss == 0.0
    assert "cannot be shown in full" in listed[odd.id].state_reason and listed[odd.id].state == jobs_pb2.RUNNING
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id=inf.id), metadata=AUTH).id == inf.id
    still_serves(other, server)


def test_a_follower_that_crashes_is_started_again_and_forgotten_when_done(server, monkeypatch, other):
    monkeypatch.setattr(supervisor_module, "_RESTART_S", (0.05, 0.1))
    calls = []

    async def flaky(job_id):
        calls.append(job_id)
        if len(calls) == 1:
            raise RuntimeError("a bug in the follower")

    monkeypatch.setattr(server.supervisor, "_follow", flaky)
    server.supervisor.follow("flaky-job")
    deadline = time.time() + 5
    while "flaky-job" in server.supervisor.followed() and time.time() < deadline:
        time.sleep(0.05)
    assert calls == ["flaky-job", "flaky-job"] and "flaky-job" not in server.supervisor.followed()
    still_serves(other, server)


# ------------------------------------------------------------------------------------- item 4: streams


def _watchers(server, job_id, n):
    channel = grpc.insecure_channel(server.address)
    s = jobs_pb2_grpc.JobServiceStub(channel)
    return channel, [s.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id, after_sequence=1), metadata=AUTH) for _ in range(n)]


def test_seventy_idle_watch_streams_leave_other_clients_served(server, other):
    quiet = running_job(server, "quiet")
    channel, streams = _watchers(server, quiet.id, 70)
    try:
        time.sleep(1.0)  # all 70 wait for an event that never comes, on a server with 4 threads
        assert all(s.running() for s in streams)
        assert still_serves(other, server) < 3.0
    finally:
        for s in streams:
            s.cancel()
        channel.close()


def test_streams_beyond_the_per_client_cap_are_resource_exhausted(server, other):
    quiet = running_job(server, "quiet-cap")
    for _attempt in range(10):  # the previous test's streams may still be letting go of their slots
        channel, streams = _watchers(server, quiet.id, STREAM_CAP)
        time.sleep(0.5)
        if all(s.running() for s in streams):
            break
        for s in streams:
            s.cancel()
        channel.close()
    try:
        extra = jobs_pb2_grpc.JobServiceStub(channel).WatchJob(jobs_pb2.WatchJobRequest(job_id=quiet.id), metadata=AUTH)
        code, _, err = refused(lambda: next(extra))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "open WatchJob" in err.details()
        still_serves(other, server)
        streams[0].cancel()
        time.sleep(0.3)
        again = jobs_pb2_grpc.JobServiceStub(channel).WatchJob(jobs_pb2.WatchJobRequest(job_id=quiet.id), metadata=AUTH)
        assert next(again).sequence == 1  # a slot freed by a closed stream is given to the next one
        again.cancel()
    finally:
        for s in streams:
            s.cancel()
        channel.close()


def test_a_followed_log_ends_with_the_job_and_closes_its_source():
    """GetJobLogs --follow reads Ray's log stream (incremental, no thread held) until the job ends, then lets it go."""
    import asyncio

    from raysft.service.operations import until_set

    closed = []

    async def endless_log():
        try:
            while True:
                yield "line\n"
                await asyncio.sleep(0.01)
        finally:
            closed.append(True)

    async def follow():
        ended, got = asyncio.Event(), []
        asyncio.get_running_loop().call_later(0.2, ended.set)
        async for text in until_set(endless_log(), ended):
            got.append(text)
        return got

    got = asyncio.run(asyncio.wait_for(follow(), 5))
    assert 3 <= len(got) < 100 and closed == [True]


# ------------------------------------------------------------------------------------- item 5: spec size


def _spec(workdir, **extra):
    raw = {"model": {"name_or_path": str(workdir / "model")}, "data": {"train": [str(workdir / "data.jsonl")]}, **extra}
    return spec_to_proto(raw)


def _validate(stub, message, **kw):
    return lambda: stub.CreateJob(jobs_pb2.CreateJobRequest(spec=message, validate_only=True, **kw), metadata=AUTH, timeout=10)


def test_a_huge_tune_grid_is_refused_quickly_while_health_checks_answer(server, stub, other, workdir):
    grid = {f"train.{k}": {"grid": [round(1e-5 * i, 8) for i in range(1, 101)]} for k in
            ("learning_rate", "weight_decay", "warmup_ratio")}  # 100 ** 3 = a million trials
    message = _spec(workdir, tune={"search": "grid", "search_space": grid})
    started = time.monotonic()
    code, fields, _ = refused(_validate(stub, message, kind=jobs_pb2.TUNE))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields[0][0] == "tune.search_space" and "1000000" in fields[0][1]
    assert time.monotonic() - started < 2.0
    still_serves(other, server)


def test_a_300000_value_grid_is_refused_by_size_without_stalling_others(server, stub, other, workdir):
    message = _spec(workdir, tune={"search": "grid", "search_space": {"train.learning_rate": {"grid": list(range(300_000))}}})
    results = {}
    thread = threading.Thread(target=lambda: results.setdefault("err", refused(_validate(stub, message, kind=jobs_pb2.TUNE))))
    thread.start()
    health = health_pb2_grpc.HealthStub(other)
    times = []
    while thread.is_alive():
        started = time.monotonic()
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        times.append(time.monotonic() - started)
        time.sleep(0.02)
    thread.join()
    code, fields, _ = results["err"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields[0][0] == "spec"
    assert max(times, default=0.0) < 1.0
    still_serves(other, server)


@pytest.mark.parametrize("where, extra, field", [
    ("a 5,000-character hub id", {"model": {"name_or_path": "m" * 5000}}, "model.name_or_path"),
    ("300 data files", {"data": {"train": [f"f{i}.jsonl" for i in range(300)]}}, "data.train"),
    ("100 search keys", {"tune": {"search_space": {f"train.k{i}": {"choice": [1, 2]} for i in range(100)}}}, "tune.search_space"),
    ("one 10 kB choice value", {"tune": {"search_space": {"train.learning_rate": {"choice": ["x" * 10_000]}}}},
     "tune.search_space.train.learning_rate.choice.0"),
])
def test_oversized_spec_fields_are_refused_by_name(server, stub, other, workdir, where, extra, field):
    raw = {"model": {"name_or_path": str(workdir / "model")}, "data": {"train": [str(workdir / "data.jsonl")]}}
    raw.update(extra)
    code, fields, _ = refused(_validate(stub, spec_to_proto(raw)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in [f for f, _ in fields], (where, fields)
    still_serves(other, server)


def test_a_thousand_label_violations_make_an_error_the_client_can_read(server, stub, other, workdir):
    labels = {f"Bad{i}": "v" for i in range(1000)}
    code, fields, err = refused(_validate(stub, _spec(workdir), labels=labels))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fields) == MAX_VIOLATIONS + 1 and "more problem" in fields[-1][1] and fields[0][0] == "labels"
    assert len(err.details()) < 2000
    still_serves(other, server)


def test_list_jobs_is_a_summary_by_default_and_full_pages_fit_the_client(server, stub, other):
    big = {"model": {"name_or_path": "m" * 60_000}, "data": {"train": [{"path": "/x.jsonl"}]}, "output_dir": "/runs/big"}
    for i in range(60):  # 60 x 60 kB: a FULL page of them would be over the client's 4 MB limit
        put_job(server, f"big-{i:02d}", JobState.SUCCEEDED, spec=big)
    basic = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000), metadata=AUTH)
    assert basic.jobs and not any(j.HasField("spec") for j in basic.jobs) and basic.ByteSize() < 1 << 20
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=100, page_token=token, view=jobs_pb2.JOB_VIEW_FULL),
                             metadata=AUTH)
        assert page.ByteSize() < 4 << 20
        seen += [j.id for j in page.jobs if j.id.startswith("big-")]
        pages, token = pages + 1, page.next_page_token
        if not token:
            break
    assert sorted(seen) == [f"big-{i:02d}" for i in range(60)] and pages >= 2
    assert all(j.spec.model.name_or_path for j in page.jobs if j.id.startswith("big-"))
    still_serves(other, server)


# ------------------------------------------------------------------------------------------- lower items


@pytest.mark.parametrize("token", [base64.urlsafe_b64encode(b"j:" + b"9" * 5000).decode(), "A" * 1_000_000,
                                   base64.urlsafe_b64encode(b"j:99999999999999999999").decode(), "%%%"])
def test_huge_or_forged_page_tokens_are_invalid_argument(server, stub, other, token):
    code, fields, _ = refused(lambda: stub.ListJobs(jobs_pb2.ListJobsRequest(page_token=token), metadata=AUTH))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields[0][0] == "page_token"
    still_serves(other, server)


@pytest.mark.parametrize("method, message, field", [
    ("GetJob", jobs_pb2.GetJobRequest(job_id="x" * 1_000_000), "job_id"),  # quoted back, it would overflow the trailer
    ("CancelJob", jobs_pb2.CancelJobRequest(job_id="x" * 100_000), "job_id"),
    ("ListJobs", jobs_pb2.ListJobsRequest(labels={f"k{i}": "v" for i in range(1000)}), "labels"),  # 1000 subqueries
])
def test_oversized_ids_and_filters_are_refused_by_name(server, stub, other, method, message, field):
    code, fields, err = refused(lambda: getattr(stub, method)(message, metadata=AUTH, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields[0][0] == field and len(err.details()) < 2000
    still_serves(other, server)


def test_unknown_methods_are_unauthenticated_without_the_token(server, other):
    probe = other.unary_unary("/raysft.v1.JobService/DropAllJobs")
    code, _, _ = refused(lambda: probe(b"", timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _, _ = refused(lambda: probe(b"", metadata=AUTH, timeout=5))
    assert code == grpc.StatusCode.UNIMPLEMENTED  # with the token, the truth
    still_serves(other, server)


def test_a_rerun_submit_returns_the_stored_job_instead_of_a_second_one(server, other, workdir, tmp_path, monkeypatch, capsys):
    """A CreateJob that timed out on the client was still stored; running the same command again must not duplicate it."""
    monkeypatch.setattr(server.jobs.runner, "ping", lambda: None)  # Ray "answers": the job is stored (and waits for Ray)
    monkeypatch.setenv("RAYSFT_SERVER", server.address)
    monkeypatch.setenv("RAYSFT_TOKEN", TOKEN)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"model": {"name_or_path": str(workdir / "model")},
                                    "data": {"train": [str(workdir / "data.jsonl")]}}))
    ids = []
    for extra in ([], [], ["--label", "run=2"], ["--new"]):
        assert main(["jobs", "submit", str(spec), "--json", *extra]) == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    message = spec_message(str(spec))
    assert content_request_id(message, None, {}) == content_request_id(spec_message(str(spec)), None, {})
    for job_id in set(ids):
        server.jobs.cancel(job_id, who=OPERATOR)
    still_serves(other, server)


def test_the_cli_escapes_terminal_control_sequences_from_job_text(server, other, monkeypatch, capsys):
    from raysft.service.jobs.store import NewEvent

    job = put_job(server, "escapes", JobState.FAILED, state_reason="boom \x1b]0;owned\x07\x1b[2J", error_code="INTERNAL",
                  error_message="\x1b[31mred\x1b[0m")
    server.store.update(job.id, lambda j, c: [NewEvent("info", "metrics", "step \x1b[1A\x1b[Kfake",
                                                       {"loss": float("inf")})])
    monkeypatch.setenv("RAYSFT_SERVER", server.address)
    monkeypatch.setenv("RAYSFT_TOKEN", TOKEN)
    main(["jobs", "get", job.id])
    main(["jobs", "watch", job.id])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;owned" in out
    assert main(["jobs", "watch", job.id, "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # valid JSON: infinity became null
    assert lines[-2]["data"]["loss"] is None
    still_serves(other, server)


def test_the_client_will_not_send_its_token_in_plaintext_off_this_machine(server, other):
    with pytest.raises(ValueError, match="plaintext"):
        JobClient("10.1.2.3:50051", token=TOKEN)
    JobClient("10.1.2.3:50051", token=TOKEN, allow_plaintext_token=True).close()  # the operator said so
    put_job(server, "plain-probe", JobState.QUEUED)
    with JobClient(server.address, token=TOKEN) as client:  # loopback: fine
        assert client.get_job("plain-probe").state == jobs_pb2.QUEUED
    still_serves(other, server)


class _FakeRay(http.server.BaseHTTPRequestHandler):
    """A Ray Jobs API whose errors say "404" and "does not exist" in their text, with other statuses."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        status = 404 if self.path.endswith("/gone") else 500
        body = b'{"detail": "Job does not exist: the 404 page"}' if status == 500 else b"not found"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_ray_error_is_judged_by_its_http_status_not_its_text():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeRay)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        runner = RayJobsRunner(f"http://127.0.0.1:{httpd.server_address[1]}", timeout_s=5)
        with pytest.raises(Unavailable):  # text says 404 / does not exist, status 500: the job is still there
            runner.info("raysft-running")
        with pytest.raises(JobVanished):
            runner.info("gone")
    finally:
        httpd.shutdown()


def test_a_state_file_naming_another_process_or_address_is_not_trusted():
    temp_dir = tempfile.mkdtemp(prefix="raysft-ray-", dir="/tmp")
    looks_right = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "start", "--head",
                                    f"--temp-dir={temp_dir}"])
    other_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = {"address": "http://127.0.0.1:8265", "gcs_address": "127.0.0.1:6379", "temp_dir": temp_dir}
        deadline = time.time() + 5
        while b"--head" not in open(f"/proc/{looks_right.pid}/cmdline", "rb").read() and time.time() < deadline:
            time.sleep(0.05)
        assert trusted_state({**state, "pid": looks_right.pid})
        assert not trusted_state({**state, "pid": other_process.pid})  # e.g. the victim the file was edited to name
        assert not trusted_state({**state, "pid": looks_right.pid, "address": "http://203.0.113.9:8265"})  # token thief
        assert not trusted_state({**state, "pid": looks_right.pid, "gcs_address": "203.0.113.9:6379"})
        assert not trusted_state({**state, "pid": looks_right.pid, "temp_dir": "/home/victim"})
        assert not trusted_state({**state, "pid": 1})
    finally:
        looks_right.kill()
        other_process.kill()
        looks_right.wait()
        other_process.wait()
        os.rmdir(temp_dir)
