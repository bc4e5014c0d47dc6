"""The admission queue without Ray jobs: its order (priority, first come first served, tenants in turn), the
server's cap and tenants' quotas, queue positions, the queue across a restart, cancelling a queued job, and two
admission passes racing on one database. Each runs on SQLite and on a real PostgreSQL. Passes are run by hand
(`Admission.admit` on a store) where the order matters; a real Ray job waiting in the queue:
test_service_integration.py."""

import http.server
import sqlite3
import threading
import time

import grpc
import pytest
import yaml
from prometheus_client import generate_latest

from raysft.service.jobs.admission import Admission, queue_order
from raysft.service.jobs.auth import OPERATOR
from raysft.service.jobs.events import transition
from raysft.service.jobs.limits import Limits
from raysft.service.jobs.quota import Quota
from raysft.service.server import create_server
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord, NewEvent, QueueEntry, Store
from raysft.service.jobs.tenants import hash_token
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from service_helpers import AUTH, HOLD, NO_RAY, TOKEN, put_job

_SPEC = {"model": {"name_or_path": "m"}, "data": {"train": [{"path": "/x.jsonl"}]}, "output_dir": "/runs/x"}


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    yield s
    s.close()


def _queue(store, job_id, tenant="default", priority=5, workers=1, state=JobState.QUEUED):
    store.create_job(JobRecord(id=job_id, kind="train", spec=_SPEC, tenant=tenant, priority=priority, workers=workers,
                               state=state),
                     [NewEvent("info", "state_changed", f"→ {state.value}", {"from": "", "to": state.value})])


def _end(store, job_id):
    store.update(job_id, lambda j, c: [transition(j, JobState.SUCCEEDED, "done")])


def _admitted(admission, store):
    return [job.id for job in admission.admit(store)]


def _drain(admission, store):
    """Admit one job at a time, ending each before the next pass: the order the queue gives them."""
    order = []
    while True:
        got = _admitted(admission, store)
        if not got:
            return order
        order += got
        for job_id in got:
            _end(store, job_id)


# --------------------------------------------------------------------------------------- order


def test_higher_priorities_go_first_and_each_priority_first_come_first_served(store):
    for job_id, priority in (("p5-a", 5), ("p1-a", 1), ("p9-a", 9), ("p5-b", 5), ("p9-b", 9), ("p0-a", 0)):
        _queue(store, job_id, priority=priority)
    assert _drain(Admission(max_running_jobs=1), store) == ["p9-a", "p9-b", "p5-a", "p5-b", "p1-a", "p0-a"]


def test_a_tenants_burst_does_not_starve_another_tenant(store):
    for i in range(1, 6):
        _queue(store, f"a{i}", tenant="a")
    _queue(store, "b1", tenant="b")
    assert _drain(Admission(max_running_jobs=1), store) == ["a1", "b1", "a2", "a3", "a4", "a5"]


def test_the_tenant_admitted_longest_ago_goes_first_even_with_older_jobs_waiting(store):
    admission = Admission(max_running_jobs=1)
    _queue(store, "a1", tenant="a")
    assert _admitted(admission, store) == ["a1"]
    _end(store, "a1")
    _queue(store, "a2", tenant="a")
    _queue(store, "b1", tenant="b")  # newer than a2, but b has not had a turn
    _queue(store, "c1", tenant="c")
    assert _drain(admission, store) == ["b1", "c1", "a2"]


def test_queue_order_takes_tenants_in_turn_within_each_priority():
    entries = [QueueEntry("a1", "a", 5, 1, 1), QueueEntry("a2", "a", 5, 2, 1), QueueEntry("b1", "b", 5, 3, 1),
               QueueEntry("b2", "b", 9, 4, 1), QueueEntry("a3", "a", 5, 5, 1), QueueEntry("b3", "b", 5, 6, 1)]
    # b's last turn is older than a's, so at priority 5 b would go first; but b2 (priority 9) goes before
    # everything and is b's turn: then a.
    assert [e.id for e in queue_order(entries, {"a": 30.0, "b": 20.0})] == ["b2", "a1", "b1", "a2", "b3", "a3"]
    fives = [e for e in entries if e.priority == 5]
    assert [e.id for e in queue_order(fives, {"a": 30.0, "b": 20.0})] == ["b1", "a1", "b3", "a2", "a3"]
    assert [e.id for e in queue_order(fives, {"a": 10.0, "b": 20.0})] == ["a1", "b1", "a2", "b3", "a3"]
    assert [e.id for e in queue_order(fives, {})] == ["a1", "b1", "a2", "b3", "a3"]  # never admitted: by first job


# -------------------------------------------------------------------------------- caps, quotas


def test_the_server_cap_counts_every_job_on_ray(store):
    _queue(store, "on-ray", state=JobState.RUNNING)
    for i in range(4):
        _queue(store, f"q{i}")
    admission = Admission(max_running_jobs=3)
    assert _admitted(admission, store) == ["q0", "q1"]
    assert _admitted(admission, store) == []
    _end(store, "on-ray")
    assert _admitted(admission, store) == ["q2"]
    assert [store.get_job(f"q{i}").state for i in range(4)] == [JobState.STARTING] * 3 + [JobState.QUEUED]


def test_a_tenants_running_jobs_quota_holds_back_its_jobs_only(store):
    quotas = {"small": Quota(max_running_jobs=1)}
    admission = Admission(quota_for=lambda tenant: quotas.get(tenant, Quota()))
    for job_id, tenant in (("s1", "small"), ("s2", "small"), ("s3", "small"), ("o1", "other"), ("o2", "other")):
        _queue(store, job_id, tenant=tenant)
    assert sorted(_admitted(admission, store)) == ["o1", "o2", "s1"]
    assert _admitted(admission, store) == []
    _end(store, "s1")
    assert _admitted(admission, store) == ["s2"]


def test_a_tenants_workers_quota_counts_the_workers_of_its_running_jobs(store):
    quotas = {"gpu": Quota(max_workers=8)}
    admission = Admission(quota_for=lambda tenant: quotas.get(tenant, Quota()))
    _queue(store, "big", tenant="gpu", workers=6, state=JobState.RUNNING)
    _queue(store, "four", tenant="gpu", workers=4)  # 6 + 4 > 8: waits
    _queue(store, "two", tenant="gpu", workers=2)  # would fit, but does not overtake its tenant's older job
    _queue(store, "elsewhere", tenant="cpu", workers=64)  # another tenant, no quota: not held back
    assert _admitted(admission, store) == ["elsewhere"]
    _end(store, "big")
    assert _admitted(admission, store) == ["four", "two"]  # 4 + 2 <= 8


def test_a_job_held_back_by_its_tenants_quota_does_not_block_the_server_cap_for_others(store):
    quotas = {"a": Quota(max_running_jobs=1)}
    admission = Admission(max_running_jobs=2, quota_for=lambda tenant: quotas.get(tenant, Quota()))
    for job_id, tenant in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")):
        _queue(store, job_id, tenant=tenant)
    assert _admitted(admission, store) == ["a1", "b1"]


# ------------------------------------------------------------------------------------ the RPCs


TEAM = (("authorization", "Bearer team-submitter-token-0001"),)


@pytest.fixture
def queue_server(db_url, tmp_path):
    """A server whose tenants file gives tenant `team` (a submitter token: TEAM) 3 queued jobs and 4 workers."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"team": {
        "tokens": [{"sha256": hash_token("team-submitter-token-0001"), "role": "submitter"}],
        "quota": {"max_queued_jobs": 3, "max_workers": 4}}}}))
    server = create_server("127.0.0.1:0", db_url=db_url, token=TOKEN, ray_address=NO_RAY, allowed_roots=[str(tmp_path)],
                           limits=HOLD, tenants=str(tenants))
    yield server
    server.stop(grace_s=0)


def _stub(server):
    return jobs_pb2_grpc.JobServiceStub(grpc.insecure_channel(server.address))


def _create(stub, *, validate_only=False, priority=None, workers=1, who=TEAM):
    spec = {"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]}, "scaling": {"num_workers": workers},
            "train": {"micro_batch_size": 1, "global_batch_size": 20}}
    request = jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec), validate_only=validate_only, priority=priority)
    return stub.CreateJob(request, metadata=who, timeout=30)


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_jobs_show_their_queue_position_and_priority(queue_server):
    put_job(queue_server, "low", JobState.QUEUED, priority=2, tenant="team")
    put_job(queue_server, "high", JobState.QUEUED, priority=8, tenant="team")
    put_job(queue_server, "running", JobState.RUNNING, tenant="team")
    stub = _stub(queue_server)
    got = {j.id: (j.queue_position, j.priority)
           for j in stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=TEAM, timeout=30).jobs}
    assert got == {"high": (1, 8), "low": (2, 2), "running": (0, 5)}
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id="low"), metadata=TEAM, timeout=30).queue_position == 2
    stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="high"), metadata=TEAM, timeout=30)
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id="low"), metadata=TEAM, timeout=30).queue_position == 1
    metrics = generate_latest(queue_server.metrics.registry).decode().splitlines()
    assert "raysft_queue_length 1.0" in metrics


def test_a_tenant_over_its_queued_jobs_quota_is_refused_naming_it(queue_server):
    for i in range(3):
        put_job(queue_server, f"waiting-{i}", JobState.QUEUED, tenant="team")
    err = _refusal(lambda: _create(_stub(queue_server)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant team has 3 queued jobs (quota max_queued_jobs: 3)" in err.details(), err.details()
    assert queue_server.store.count_jobs(tenant="team", states=(JobState.QUEUED,)) == 3


def test_create_job_bounds_priority_and_a_tenants_workers(queue_server):
    stub = _stub(queue_server)
    for priority in (-1, 10):
        err = _refusal(lambda: _create(stub, validate_only=True, priority=priority))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"priority: must be 0 – 9 (got {priority})" in err.details()
    err = _refusal(lambda: _create(stub, validate_only=True, workers=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "scaling.num_workers: needs 5 workers, over tenant team's quota of 4 (max_workers)" in err.details()
    assert _create(stub, validate_only=True, priority=0).priority == 0
    assert _create(stub, validate_only=True).priority == 5  # unset


def test_the_queue_survives_a_restart_in_order(db_url, tmp_path):
    def start():
        return create_server("127.0.0.1:0", db_url=db_url, token=TOKEN, ray_address=NO_RAY,
                             allowed_roots=[str(tmp_path)], limits=HOLD)

    server = start()
    for job_id, tenant, priority in (("a1", "a", 5), ("a2", "a", 5), ("b1", "b", 5), ("urgent", "b", 9)):
        put_job(server, job_id, JobState.QUEUED, tenant=tenant, priority=priority)
    before = {j.id: j.queue_position for j in server.jobs.list(who=OPERATOR, states=(), labels={}, page_size=0, page_token="")[0]}
    server.stop(grace_s=0)
    server = start()
    try:
        after = {j.id: j.queue_position
                 for j in _stub(server).ListJobs(jobs_pb2.ListJobsRequest(), metadata=AUTH, timeout=30).jobs}
        assert after == before == {"urgent": 1, "a1": 2, "b1": 3, "a2": 4}
        assert _drain(Admission(max_running_jobs=1), server.store) == ["urgent", "a1", "b1", "a2"]
    finally:
        server.stop(grace_s=0)


class _RecordingRay(http.server.BaseHTTPRequestHandler):
    """Stands where Ray's dashboard would: records every request and answers 503."""

    seen: list = []

    def _any(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = do_DELETE = do_PUT = _any

    def log_message(self, *args):
        pass


def test_cancelling_a_queued_job_never_reaches_ray(db_url, tmp_path):
    ray = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingRay)
    threading.Thread(target=ray.serve_forever, daemon=True).start()
    _RecordingRay.seen = []
    # Admitted, then cancelled before the supervisor submitted it (the server stopped in between).
    before = Store(db_url)
    _queue(before, "admitted", state=JobState.CANCELLING)
    before.close()
    server = create_server("127.0.0.1:0", db_url=db_url, token=TOKEN, ray_address=f"http://127.0.0.1:{ray.server_port}",
                           allowed_roots=[str(tmp_path)], limits=Limits(max_running_jobs=1), poll_s=0.1)
    try:
        put_job(server, "holder", JobState.RUNNING)  # stored after the reconciler ran: takes the one slot, unfollowed
        put_job(server, "waiting", JobState.QUEUED)
        server.supervisor.nudge()
        stub = _stub(server)
        assert stub.GetJob(jobs_pb2.GetJobRequest(job_id="waiting"), metadata=AUTH, timeout=30).queue_position == 1
        job = stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="waiting"), metadata=AUTH, timeout=30)
        assert job.state == jobs_pb2.CANCELLED and job.queue_position == 0 and not job.ray_submission_id
        deadline = time.time() + 30
        while time.time() < deadline and server.store.get_job("admitted").state != JobState.CANCELLED:
            time.sleep(0.1)
        admitted = server.store.get_job("admitted")
        assert (admitted.state, admitted.state_reason) == (JobState.CANCELLED, "cancelled before it reached Ray")
    finally:
        server.stop(grace_s=0)
        ray.shutdown()
    assert _RecordingRay.seen == []


# ------------------------------------------------------------------------------------ the race


def test_two_servers_admitting_at_once_never_admit_a_job_twice_nor_overrun_the_cap(db_url):
    stores = [Store(db_url), Store(db_url)]  # two servers' stores on one database
    for i in range(24):
        _queue(stores[0], f"r{i:02d}", tenant=f"t{i % 3}")
    admission = Admission(max_running_jobs=10)
    got: list[list[str]] = [[], []]
    errors = []
    start = threading.Barrier(2)

    def admit(n):
        start.wait()
        try:
            for _ in range(5):
                got[n] += _admitted(admission, stores[n])
        except Exception as exc:  # a pass that fails is a pass that raced
            errors.append(exc)

    threads = [threading.Thread(target=admit, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = got[0] + got[1]
    assert not errors, errors
    assert len(both) == len(set(both)) == 10, got
    starting = [j.id for j in stores[1].list_jobs(states=(JobState.STARTING,), limit=100)]
    assert sorted(starting) == sorted(both)
    for job_id in both:  # each admitted once: one QUEUED → STARTING event
        assert [e.data["to"] for e in stores[1].events(job_id)] == ["QUEUED", "STARTING"]
    for s in stores:
        s.close()


def test_a_store_from_before_the_queue_gains_its_columns_and_admits_its_jobs(tmp_path):
    db = tmp_path / "old.db"
    _queue(Store(f"sqlite:///{db}"), "old-1")
    with sqlite3.connect(db) as conn:  # as an older server left it
        for column in ("priority", "workers"):
            conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        conn.execute("DROP TABLE admission_turns")
    store = Store(f"sqlite:///{db}")
    job = store.get_job("old-1")
    assert (job.priority, job.workers, job.state) == (5, 1, JobState.QUEUED)
    assert _admitted(Admission(max_running_jobs=1), store) == ["old-1"]
    store.close()
