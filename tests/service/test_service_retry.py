"""Resume and retry without a Ray cluster: the failure classifier, ResumeJob's refusals and CreateJob's
max_attempts over real gRPC (the offline server), the store upgrade, and the supervisor's deadline on an
unreachable Ray (a real runner pointed at a port where nothing listens). Real Ray jobs that are killed, retried,
cancelled and resumed: test_service_integration.py."""

import asyncio
import json
import sqlite3
import time

import grpc
import pytest

from raysft.service.ray import failures
from raysft.cli import service_main as main
from raysft.service.ray.runner import RayJobInfo, RayJobsRunner, ray_submission_id
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import CheckpointRecord, JobRecord, NewEvent, Store
from raysft.service.ray.supervisor import Supervisor
from raysft.service.v1 import jobs_pb2
from raysft.train.runlog import event_line
from service_helpers import AUTH, NO_RAY, TOKEN, put_job

_SPEC = {"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]}}


# ------------------------------------------------------------------------------- classification


@pytest.mark.parametrize("status, exit_code, log, code, kind", [
    ("FAILED", 2, "error: data.train.0: no valid conversations", "INVALID_ARGUMENT", "USER"),  # bad input
    ("FAILED", 1, "error: training failed: ValueError: loss is nan", "INTERNAL", "USER"),  # training raised
    ("FAILED", 1, "error: training failed: ray.exceptions.ActorDiedError: The actor died unexpectedly",
     "UNAVAILABLE", "SYSTEM"),  # a worker's node died under training
    ("FAILED", -9, "", "UNAVAILABLE", "SYSTEM"),  # the driver was killed
    ("FAILED", None, "", "UNAVAILABLE", "SYSTEM"),  # Ray lost the driver (its node died)
])
def test_ray_failures_are_user_or_system_errors_by_exit_code_and_ray_error_type(status, exit_code, log, code, kind):
    failure = failures.ray_failure(RayJobInfo(status, "Job entrypoint command failed", exit_code), log)
    assert (failure.code, failure.kind, failure.retryable) == (code, kind, kind == "SYSTEM")
    if log:
        assert log.split("error: ", 1)[1] in failure.message


def test_a_job_cannot_claim_a_system_error_with_exit_code_2():
    forged = failures.ray_failure(RayJobInfo("FAILED", "", 2), "error: NodeDiedError: trust me")
    assert forged.kind == "USER"


def test_every_other_failure_is_classified_where_it_arises():
    assert failures.vanished("j-a2").kind == failures.unreachable(5, "refused").kind == "SYSTEM"
    assert failures.stopped_outside("j").code == "CANCELLED" and failures.stopped_outside("j").kind == "SYSTEM"
    assert failures.rejected("HTTP 400").kind == failures.bad_stored_spec("x").kind == "USER"


def test_attempts_after_the_first_have_their_own_ray_submission_id():
    assert [ray_submission_id("raysft-ab", n) for n in (1, 2, 3)] == ["raysft-ab", "raysft-ab-a2", "raysft-ab-a3"]


# ------------------------------------------------------------------------------------ the RPCs


def _resume(stub, job_id):
    return stub.ResumeJob(jobs_pb2.ResumeJobRequest(job_id=job_id), metadata=AUTH, timeout=30)


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def _with_checkpoint(server, job_id):
    server.store.update(job_id, lambda j, c: c.update({4: CheckpointRecord(job_id, 4, f"/runs/{job_id}/checkpoints/"
                                                                                      "checkpoint_000004", {}, 1.0)}) or [])


def test_resume_refuses_active_succeeded_and_checkpointless_jobs(offline_server, stub):
    put_job(offline_server, "rs-running", JobState.RUNNING)
    put_job(offline_server, "rs-done", JobState.SUCCEEDED)
    _with_checkpoint(offline_server, "rs-done")
    put_job(offline_server, "rs-bare", JobState.FAILED, error_code="UNAVAILABLE", error_kind="SYSTEM")
    for job_id, says in (("rs-running", "is RUNNING; only a FAILED or CANCELLED job can be resumed (cancel it first"),
                         ("rs-done", "is SUCCEEDED; only a FAILED or CANCELLED job"),
                         ("rs-bare", "saved no checkpoint to resume from")):
        err = _refusal(lambda: _resume(stub, job_id))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and says in err.details(), err.details()
    assert _refusal(lambda: _resume(stub, "rs-missing")).code() == grpc.StatusCode.NOT_FOUND
    assert offline_server.store.get_job("rs-bare").attempt == 1  # nothing changed


def test_resume_checks_ray_before_it_changes_anything(offline_server, stub):
    put_job(offline_server, "rs-cancelled", JobState.CANCELLED, events=3)
    _with_checkpoint(offline_server, "rs-cancelled")
    err = _refusal(lambda: _resume(stub, "rs-cancelled"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # the offline server's Ray is down
    job = offline_server.store.get_job("rs-cancelled")
    assert (job.state, job.attempt, job.last_sequence) == (JobState.CANCELLED, 1, 3)


def test_a_job_past_the_attempt_limit_cannot_be_resumed(offline_server, stub):
    put_job(offline_server, "rs-worn", JobState.FAILED, attempt=failures.MAX_ATTEMPTS)
    _with_checkpoint(offline_server, "rs-worn")
    err = _refusal(lambda: _resume(stub, "rs-worn"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and f"ran {failures.MAX_ATTEMPTS} attempts" in err.details()


@pytest.mark.parametrize("max_attempts, kind, says", [
    (11, jobs_pb2.TRAIN, "must be 1 – 10 (got 11)"), (-1, jobs_pb2.TRAIN, "must be 1 – 10 (got -1)"),
    (2, jobs_pb2.TUNE, "only TRAIN jobs are retried")])
def test_create_job_bounds_max_attempts(stub, max_attempts, kind, says):
    tune = {"search": "grid", "scheduler": "none", "search_space": {"train.learning_rate": {"choice": [1e-4, 2e-4]}}}
    spec = {**_SPEC, "tune": tune} if kind == jobs_pb2.TUNE else _SPEC
    request = jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec), kind=kind, validate_only=True, max_attempts=max_attempts)
    err = _refusal(lambda: stub.CreateJob(request, metadata=AUTH, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and f"max_attempts: {says}" in err.details(), err.details()


def test_jobs_show_their_attempts_and_the_kind_of_their_error(offline_server, stub, monkeypatch, capsys):
    put_job(offline_server, "rs-shown", JobState.FAILED, attempt=2, max_attempts=3, error_code="INVALID_ARGUMENT",
            error_message="no valid conversations", error_kind="USER", submitted_at=1.0)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id="rs-shown"), metadata=AUTH, timeout=30)
    assert (job.attempt, job.max_attempts, job.error_kind, job.ray_submission_id) == (2, 3, jobs_pb2.USER, "rs-shown-a2")
    monkeypatch.setenv("RAYSFT_SERVER", offline_server.address)
    monkeypatch.setenv("RAYSFT_TOKEN", TOKEN)
    assert main(["jobs", "get", "rs-shown"]) == 0
    out = capsys.readouterr().out
    assert "error (USER): no valid conversations" in out and "attempt: 2 of 3" in out
    assert main(["jobs", "get", "rs-shown", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["error_kind"] == "USER"
    assert main(["jobs", "resume", "rs-shown"]) == 2
    assert "FAILED_PRECONDITION" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the store


def test_a_store_from_before_attempts_gains_the_columns_and_keeps_its_jobs(tmp_path):
    db = tmp_path / "old.db"
    Store(f"sqlite:///{db}").create_job(JobRecord(id="old-1", kind="train", spec=_SPEC), [NewEvent("info", "x", "y")])
    with sqlite3.connect(db) as conn:  # as an older server left it: no attempt columns
        for column in ("attempt", "max_attempts", "error_kind"):
            conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    store = Store(f"sqlite:///{db}")
    job = store.get_job("old-1")
    assert (job.attempt, job.max_attempts, job.error_kind, job.last_sequence) == (1, 1, "", 1)
    store.close()


# ------------------------------------------------------------------------------- the supervisor


def test_ray_unreachable_past_the_deadline_retries_a_job_with_attempts_left_and_fails_the_others(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/jobs.db")
    for job_id, attempts in (("dl-retry", 2), ("dl-last", 1)):
        store.create_job(JobRecord(id=job_id, kind="train", spec={**_SPEC, "output_dir": str(tmp_path / job_id)},
                                   state=JobState.RUNNING, submitted_at=time.time(), max_attempts=attempts),
                         [NewEvent("info", "state_changed", "→ RUNNING", {"from": "", "to": "RUNNING"})])
    supervisor = Supervisor(store, RayJobsRunner(NO_RAY, timeout_s=1), poll_s=0.1, ray_deadline_s=0.5)
    supervisor.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (store.get_job("dl-retry").state == JobState.STARTING
                                               and store.get_job("dl-last").state.terminal):
            time.sleep(0.2)
        retried, last = store.get_job("dl-retry"), store.get_job("dl-last")
        assert "dl-retry" in supervisor.followed()  # admitted again from the queue, waiting for Ray to submit attempt 2
    finally:
        supervisor.stop()
    assert (retried.state, retried.attempt, retried.error_code, retried.submitted_at) == (JobState.STARTING, 2, "", None)
    moved = [e for e in store.events("dl-retry") if e.data.get("to") == "QUEUED"][-1]
    assert moved.data == {"from": "RUNNING", "to": "QUEUED", "reason": moved.data["reason"]}
    assert "Ray stayed unreachable for over 0.5 s" in moved.message and "retrying as attempt 2 of 2" in moved.message
    assert (last.state, last.attempt, last.error_code, last.error_kind) == (JobState.FAILED, 1, "UNAVAILABLE", "SYSTEM")
    assert [e.type for e in store.events("dl-last")][-2:] == ["error", "state_changed"]
    store.close()


class _LogReplay(RayJobsRunner):
    """A Ray job whose log follower gets `reads[k]` on its k-th read from the start; the job succeeds once the
    last read was taken in, and Ray keeps no log after it (what the follower read is all there is)."""

    def __init__(self):
        super().__init__(NO_RAY, timeout_s=1)
        self.reads, self.calls, self.read_through = [], 0, False

    async def tail(self, job_id: str, lines: int = -1):
        text = self.reads[min(self.calls, len(self.reads) - 1)]
        self.calls += 1
        for line in text.splitlines(keepends=True):
            yield line
        self.read_through = self.calls >= len(self.reads)  # the consumer asked past the last line: it took them all
        while True:
            await asyncio.sleep(0.05)

    def info(self, job_id: str) -> RayJobInfo:
        return RayJobInfo("SUCCEEDED", "", 0) if self.read_through else RayJobInfo("RUNNING", "", None)

    def logs(self, job_id: str) -> str:
        return ""


@pytest.mark.parametrize("second_read_has_it", [True, False])
def test_an_event_line_missing_from_a_log_read_is_read_again_and_only_then_called_lost(tmp_path, second_read_has_it):
    store = Store(f"sqlite:///{tmp_path}/jobs.db")
    store.create_job(JobRecord(id="gap", kind="train", spec={**_SPEC, "output_dir": str(tmp_path / "gap")},
                               state=JobState.RUNNING, submitted_at=time.time()),
                     [NewEvent("info", "state_changed", "→ RUNNING", {"from": "", "to": "RUNNING"})])
    runner = _LogReplay()
    supervisor = Supervisor(store, runner, poll_s=0.05)
    key = supervisor.event_key("gap")
    lines = {s: event_line(key, {"seq": s, "time": "2026-01-01T00:00:00+00:00", "level": "info", "type": "metrics",
                                 "message": f"step {s}", "data": {"step": s}}) + "\n" for s in range(1, 6)}
    lossy = "".join(v for s, v in lines.items() if s != 3)
    runner.reads = [lossy, "".join(lines.values()) if second_read_has_it else lossy]
    supervisor.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not store.get_job("gap").state.terminal:
            time.sleep(0.05)
    finally:
        supervisor.stop()
    events = [(e.type, e.data.get("step")) for e in store.events("gap") if e.type in ("metrics", "events_missing")]
    assert store.get_job("gap").state == JobState.SUCCEEDED and runner.calls == 2
    if second_read_has_it:
        assert events == [("metrics", s) for s in range(1, 6)]
    else:
        assert events == [("metrics", 1), ("metrics", 2), ("events_missing", None), ("metrics", 4), ("metrics", 5)]
    store.close()
