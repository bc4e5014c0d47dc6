"""The gRPC API on a real server (no Ray jobs): 61 malformed requests, to every RPC, get the right status and
field, the server stays healthy, and reads, watch, cancel and delete behave as documented."""

import contextlib
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from raysft.service.jobs.events import take_training_events, transition
from raysft.service.server import create_server
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from service_helpers import AUTH, HOLD, NO_RAY, TOKEN, put_job

BASE = {"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]}}


def _with(**sections):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        if value is None:
            raw.pop(key, None)
        elif isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return raw


def _proto(raw, **fields):
    message = spec_to_proto(raw)
    for dotted, number in fields.items():  # enum numbers no client library would send
        section, name = dotted.split(".")
        setattr(getattr(message, section), name, number)
    return message


def create(raw=None, *, spec=None, validate_only=True, **kw):
    message = spec if spec is not None else spec_to_proto(raw)
    return lambda stub: stub.CreateJob(jobs_pb2.CreateJobRequest(spec=message, validate_only=validate_only, **kw), metadata=AUTH)


def call(method, request):
    return lambda stub: getattr(stub, method)(request, metadata=AUTH)


def stream(method, request):
    return lambda stub: list(getattr(stub, method)(request, metadata=AUTH))


CASES = [
    # ---- the spec (validate_only: nothing would run anyway)
    ("no model", create(_with(model=None)), "INVALID_ARGUMENT", "model"),
    ("no data", create(_with(data=None)), "INVALID_ARGUMENT", "data"),
    ("empty model path", create(_with(model={"name_or_path": ""})), "INVALID_ARGUMENT", "model.name_or_path"),
    ("rank 0", create(_with(model={"lora": {"rank": 0}})), "INVALID_ARGUMENT", "model.lora.rank"),
    ("negative alpha", create(_with(model={"lora": {"alpha": -1}})), "INVALID_ARGUMENT", "model.lora.alpha"),
    ("dropout 1", create(_with(model={"lora": {"dropout": 1.0}})), "INVALID_ARGUMENT", "model.lora.dropout"),
    ("unknown method number", create(spec=_proto(BASE, **{"model.method": 99})), "INVALID_ARGUMENT", "model.method"),
    ("quantization without qlora", create(_with(model={"quantization": {"bits": 4}})), "INVALID_ARGUMENT", "model.quantization"),
    ("8-bit quantization", create(_with(model={"method": "qlora", "quantization": {"bits": 8}})), "INVALID_ARGUMENT",
     "model.quantization.bits"),
    ("adapter on full fine-tune", create(_with(model={"method": "full", "init_adapter": "model"})), "INVALID_ARGUMENT",
     "model.init_adapter"),
    ("no train files", create(_with(data={"train": []})), "INVALID_ARGUMENT", "data.train"),
    ("empty train path", create(_with(data={"train": [{"path": ""}]})), "INVALID_ARGUMENT", "data.train.0.path"),
    ("zero weight", create(_with(data={"train": [{"path": "data.jsonl", "weight": 0}]})), "INVALID_ARGUMENT", "data.train.0.weight"),
    ("validation file and split", create(_with(data={"validation": "data.jsonl", "validation_split": 0.1})), "INVALID_ARGUMENT",
     "data.validation_split"),
    ("stratify without split", create(_with(data={"stratify_by": "assistant", "validation_split": 0})), "INVALID_ARGUMENT",
     "data.stratify_by"),
    ("mix ratios sum to 1", create(_with(data={"mix": [{"path": "data.jsonl", "ratio": 0.6}, {"path": "data.jsonl", "ratio": 0.5}]})),
     "INVALID_ARGUMENT", "data.mix"),
    ("mix ratio 0", create(_with(data={"mix": [{"path": "data.jsonl", "ratio": 0}]})), "INVALID_ARGUMENT", "data.mix.0.ratio"),
    ("max_seq_len 0", create(_with(data={"max_seq_len": 0})), "INVALID_ARGUMENT", "data.max_seq_len"),
    ("unknown loss_on number", create(spec=_proto(BASE, **{"data.loss_on": 7})), "INVALID_ARGUMENT", "data.loss_on"),
    ("zero epochs", create(_with(train={"epochs": 0})), "INVALID_ARGUMENT", "train.epochs"),
    ("negative learning rate", create(_with(train={"learning_rate": -1e-4})), "INVALID_ARGUMENT", "train.learning_rate"),
    ("batch not a multiple", create(_with(train={"micro_batch_size": 2, "global_batch_size": 3})), "INVALID_ARGUMENT",
     "train.global_batch_size"),
    ("warmup ratio 1", create(_with(train={"warmup_ratio": 1.0})), "INVALID_ARGUMENT", "train.warmup_ratio"),
    ("clip norm 0", create(_with(train={"max_grad_norm": 0.0})), "INVALID_ARGUMENT", "train.max_grad_norm"),
    ("generate with nothing to do", create(_with(eval={"generate": {"max_new_tokens": 8}})), "INVALID_ARGUMENT", "eval.generate"),
    ("best by exact_match without it", create(_with(checkpoint={"keep_best_by": "exact_match"})), "INVALID_ARGUMENT",
     "checkpoint.keep_best_by"),
    ("early stopping without validation", create(_with(eval={"early_stopping": {"patience": 2}}, data={"validation_split": 0})),
     "INVALID_ARGUMENT", "eval.early_stopping"),
    ("zero workers", create(_with(scaling={"num_workers": 0})), "INVALID_ARGUMENT", "scaling.num_workers"),
    ("max_failures -2", create(_with(scaling={"max_failures": -2})), "INVALID_ARGUMENT", "scaling.max_failures"),
    ("unknown use_gpu number", create(spec=_proto(BASE, **{"scaling.use_gpu": 9})), "INVALID_ARGUMENT", "scaling.use_gpu"),
    ("../ escape", create(_with(data={"train": ["../../etc/passwd"]})), "INVALID_ARGUMENT", "data.train.0.path"),
    ("absolute path outside", create(_with(model={"init_adapter": "/etc"})), "INVALID_ARGUMENT", "model.init_adapter"),
    ("NUL byte in a path", create(_with(data={"train": ["data\x00.jsonl"]})), "INVALID_ARGUMENT", "data.train.0.path"),
    ("output_dir outside", create(_with(output_dir="/var/tmp/steal")), "INVALID_ARGUMENT", "output_dir"),
    ("remote code", create(_with(model={"trust_remote_code": True})), "INVALID_ARGUMENT", "model.trust_remote_code"),
    ("empty search space", create(_with(tune={"search_space": {}})), "INVALID_ARGUMENT", "tune.search_space"),
    ("unknown search key", create(_with(tune={"search_space": {"train.lr": {"choice": [1e-4]}}})), "INVALID_ARGUMENT",
     "tune.search_space.train.lr"),
    # ---- the rest of the request
    ("TUNE without a tune section", create(BASE, kind=jobs_pb2.TUNE), "INVALID_ARGUMENT", "tune"),
    ("unknown kind", create(BASE, kind=99), "INVALID_ARGUMENT", "kind"),
    ("no spec", lambda stub: stub.CreateJob(jobs_pb2.CreateJobRequest(validate_only=True), metadata=AUTH), "INVALID_ARGUMENT", "spec"),
    ("bad label key", create(BASE, labels={"Bad Key": "x"}), "INVALID_ARGUMENT", "labels.Bad Key"),
    ("label value too long", create(BASE, labels={"team": "x" * 64}), "INVALID_ARGUMENT", "labels.team"),
    ("bad request id", create(BASE, request_id="has spaces"), "INVALID_ARGUMENT", "request_id"),
    ("Ray unreachable", create(BASE, validate_only=False), "UNAVAILABLE", None),
    ("request id reused with another body", create(BASE, validate_only=False, request_id="req-seen"), "ALREADY_EXISTS", None),
    ("no job id", call("GetJob", jobs_pb2.GetJobRequest()), "INVALID_ARGUMENT", "job_id"),
    ("unknown job", call("GetJob", jobs_pb2.GetJobRequest(job_id="nope")), "NOT_FOUND", None),
    ("cancel unknown job", call("CancelJob", jobs_pb2.CancelJobRequest(job_id="nope")), "NOT_FOUND", None),
    ("delete unknown job", call("DeleteJob", jobs_pb2.DeleteJobRequest(job_id="nope")), "NOT_FOUND", None),
    ("delete a running job", call("DeleteJob", jobs_pb2.DeleteJobRequest(job_id="running-1")), "FAILED_PRECONDITION", None),
    ("watch unknown job", stream("WatchJob", jobs_pb2.WatchJobRequest(job_id="nope")), "NOT_FOUND", None),
    ("watch before the start", stream("WatchJob", jobs_pb2.WatchJobRequest(job_id="done-1", after_sequence=-1)),
     "INVALID_ARGUMENT", "after_sequence"),
    ("negative page size", call("ListJobs", jobs_pb2.ListJobsRequest(page_size=-1)), "INVALID_ARGUMENT", "page_size"),
    ("forged page token", call("ListJobs", jobs_pb2.ListJobsRequest(page_token="not-a-token")), "INVALID_ARGUMENT", "page_token"),
    ("unknown state filter", call("ListJobs", jobs_pb2.ListJobsRequest(states=[42])), "INVALID_ARGUMENT", "states.0"),
    ("event token from jobs", lambda stub: stub.ListJobEvents(jobs_pb2.ListJobEventsRequest(
        job_id="done-1", page_token=stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1), metadata=AUTH).next_page_token),
        metadata=AUTH), "INVALID_ARGUMENT", "page_token"),
    ("negative log tail", stream("GetJobLogs", jobs_pb2.GetJobLogsRequest(job_id="done-1", tail_lines=-1)), "INVALID_ARGUMENT",
     "tail_lines"),
    ("checkpoints of no job id", call("ListCheckpoints", jobs_pb2.ListCheckpointsRequest()), "INVALID_ARGUMENT", "job_id"),
    ("checkpoints of an unknown job", call("ListCheckpoints", jobs_pb2.ListCheckpointsRequest(job_id="nope")), "NOT_FOUND", None),
    ("resume an unknown job", call("ResumeJob", jobs_pb2.ResumeJobRequest(job_id="nope")), "NOT_FOUND", None),
    ("resume a running job", call("ResumeJob", jobs_pb2.ResumeJobRequest(job_id="running-1")), "FAILED_PRECONDITION", None),
]


@pytest.fixture(scope="module")
def seeded(offline_server):
    put_job(offline_server, "running-1", JobState.RUNNING)
    put_job(offline_server, "other-1", JobState.SUCCEEDED)
    offline_server.store.create_job(JobRecord(id="done-1", kind="train", spec=dict(BASE), state=JobState.SUCCEEDED,
                                              request_id="req-seen"), [], body_hash="the hash of another body")
    return offline_server


def _violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    out = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [v.field for v in bad.field_violations]
    return out


class _Recorder:
    """A stub that only notes which RPCs a case calls."""

    def __init__(self):
        self.called = set()

    def __getattr__(self, rpc):
        self.called.add(rpc)
        return lambda request, metadata: iter(())


def test_the_table_sends_a_malformed_request_to_every_rpc():
    recorder = _Recorder()
    for name, send, *_ in CASES:
        with contextlib.suppress(AttributeError):  # a case that reads a reply field of the first call it makes
            send(recorder)
    assert recorder.called == {m.name for m in jobs_pb2.DESCRIPTOR.services_by_name["JobService"].methods}
    assert len({name for name, *_ in CASES}) == len(CASES)  # ids tell the cases apart


@pytest.mark.parametrize("name, send, code, field", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_its_status_and_field(seeded, stub, name, send, code, field):
    with pytest.raises(grpc.RpcError) as err:
        send(stub)
    assert err.value.code().name == code, err.value.details()
    if field is not None:
        assert field in _violations(err.value), (_violations(err.value), err.value.details())
        assert field in err.value.details()  # the message names the field too


def test_the_server_is_still_healthy_and_serving_after_the_table(seeded, channel, stub):
    garbage = channel.unary_unary("/raysft.v1.JobService/CreateJob")
    with pytest.raises(grpc.RpcError) as err:  # bytes that are no CreateJobRequest at all
        garbage(b"\xff\xfe\x00garbage", metadata=AUTH)
    assert err.value.code() != grpc.StatusCode.OK
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="raysft.v1.JobService"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    valid = stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(_with(train={"learning_rate": 1.0})), validate_only=True),
                           metadata=AUTH)
    assert valid.state == jobs_pb2.JOB_STATE_UNSPECIFIED and valid.id == ""
    assert valid.spec.data.train[0].path.endswith("/data.jsonl") and valid.spec.data.train[0].path.startswith("/")
    assert [w.field for w in valid.warnings] == ["train.learning_rate"]
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id="running-1"), metadata=AUTH).state == jobs_pb2.RUNNING


def test_cancel_is_idempotent_and_leaves_terminal_jobs_unchanged(offline_server, stub):
    put_job(offline_server, "queued-1", JobState.QUEUED)
    first = stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="queued-1"), metadata=AUTH)
    again = stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="queued-1"), metadata=AUTH)
    assert first.state == again.state == jobs_pb2.CANCELLED and first.error.code == 1  # google.rpc.Code CANCELLED
    assert first.update_time == again.update_time
    done = put_job(offline_server, "finished-1", JobState.SUCCEEDED)
    assert stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="finished-1"), metadata=AUTH).state == jobs_pb2.SUCCEEDED
    assert offline_server.store.get_job("finished-1").updated_at == done.updated_at
    events = list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="queued-1"), metadata=AUTH))
    assert events[-1].type == "state_changed" and events[-1].data["to"] == "CANCELLED"  # the stream ended after it


def test_watch_streams_live_events_resumes_without_gaps_and_ends_after_the_terminal_event(offline_server, stub):
    put_job(offline_server, "live-1", JobState.RUNNING, events=3)
    got, arrival = [], {}

    def watch(after):
        for event in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="live-1", after_sequence=after), metadata=AUTH):
            got.append(event.sequence)
            arrival[event.sequence] = time.time()

    watcher = threading.Thread(target=watch, args=(1,))
    watcher.start()
    time.sleep(0.3)
    appended_at = {}
    for step in (1, 2):
        line = {"seq": step, "time": "2026-01-01T00:00:00+00:00", "level": "info", "type": "metrics", "message": "m",
                "data": {"step": step}}
        job, events = offline_server.store.update("live-1", lambda j, c: take_training_events(j, c, [line]))
        appended_at[events[0].sequence] = time.time()
    offline_server.store.update("live-1", lambda j, c: [transition(j, JobState.SUCCEEDED, "done")])
    watcher.join(timeout=10)
    assert not watcher.is_alive(), "the stream did not end after the terminal event"
    assert got == [2, 3, 4, 5, 6]
    assert all(arrival[s] - appended_at[s] < 0.5 for s in appended_at)  # woken by the store, not by polling
    resumed = [e.sequence for e in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="live-1", after_sequence=4), metadata=AUTH)]
    assert resumed == [5, 6]


def test_lists_page_newest_first_and_filter(offline_server, stub):
    for i in range(3):
        put_job(offline_server, f"page-{i}", JobState.FAILED, labels={"suite": "paging"})
    first = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=2, labels={"suite": "paging"}), metadata=AUTH)
    second = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=2, labels={"suite": "paging"}, page_token=first.next_page_token),
                           metadata=AUTH)
    assert [j.id for j in first.jobs] + [j.id for j in second.jobs] == ["page-2", "page-1", "page-0"]
    assert second.next_page_token == ""
    failed = stub.ListJobs(jobs_pb2.ListJobsRequest(states=[jobs_pb2.FAILED]), metadata=AUTH)
    assert {j.id for j in failed.jobs} >= {"page-0", "page-1", "page-2"} and all(j.state == jobs_pb2.FAILED for j in failed.jobs)
    put_job(offline_server, "many-events", JobState.SUCCEEDED, events=7)
    page = stub.ListJobEvents(jobs_pb2.ListJobEventsRequest(job_id="many-events", page_size=5), metadata=AUTH)
    rest = stub.ListJobEvents(jobs_pb2.ListJobEventsRequest(job_id="many-events", page_size=5, page_token=page.next_page_token),
                              metadata=AUTH)
    assert [e.sequence for e in page.events] + [e.sequence for e in rest.events] == list(range(1, 8))
    assert rest.next_page_token == ""


def test_checkpoints_list_the_kept_ones_newest_first_with_the_best_marked(offline_server, stub):
    put_job(offline_server, "ckpt-1", JobState.RUNNING)
    saves = [{"seq": i, "time": "2026-01-01T00:00:00+00:00", "type": "checkpoint_saved", "message": "c",
              "data": {"step": i, "uri": f"/runs/ckpt-1/checkpoints/checkpoint_{i:06d}", "eval_loss": loss}}
             for i, loss in ((1, 3.0), (2, 1.0), (3, 2.0), (4, 2.5))]
    pruned = {"seq": 5, "time": "2026-01-01T00:00:00+00:00", "type": "checkpoint_pruned", "message": "p",
              "data": {"step": 1, "uri": "/runs/ckpt-1/checkpoints/checkpoint_000001"}}  # Ray keeps 2 and the latest
    offline_server.store.update("ckpt-1", lambda j, c: take_training_events(j, c, saves + [pruned]))
    kept = stub.ListCheckpoints(jobs_pb2.ListCheckpointsRequest(job_id="ckpt-1"), metadata=AUTH).checkpoints
    assert [(c.step, c.is_best, c.metrics["eval_loss"]) for c in kept] == [(4, False, 2.5), (3, False, 2.0), (2, True, 1.0)]
    assert kept[0].uri == "/runs/ckpt-1/checkpoints/checkpoint_000004"


def test_delete_removes_a_finished_job(offline_server, stub):
    put_job(offline_server, "delete-me", JobState.CANCELLED)
    stub.DeleteJob(jobs_pb2.DeleteJobRequest(job_id="delete-me"), metadata=AUTH)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(jobs_pb2.GetJobRequest(job_id="delete-me"), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _random_message(message, data, depth=0):
    """Set a random subset of `message`'s fields to random values of their type (unknown enum numbers,
    NaN, huge integers, NUL bytes and all)."""
    from google.protobuf.descriptor import FieldDescriptor as F
    from hypothesis import strategies as st

    scalars = {F.TYPE_INT64: st.integers(-2**63, 2**63 - 1), F.TYPE_INT32: st.integers(-2**31, 2**31 - 1),
               F.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True), F.TYPE_BOOL: st.booleans(),
               F.TYPE_STRING: st.text(max_size=12), F.TYPE_ENUM: st.integers(-3, 12)}
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans()):
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry or field.message_type.full_name.startswith("google.") or depth > 3:
                continue
            target = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
            target.SetInParent()
            _random_message(target, data, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend(data.draw(st.lists(scalars[field.type], max_size=3)))
        else:
            setattr(message, field.name, data.draw(scalars[field.type]))


def test_random_specs_never_crash_the_server(offline_server, stub):
    from hypothesis import HealthCheck, given, settings, strategies as st

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        spec = spec_to_proto(BASE)
        _random_message(spec, data)
        try:
            stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec, validate_only=True), metadata=AUTH)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()

    check()


def test_streams_a_client_leaves_give_their_threads_back(tmp_path):
    """Each waiting WatchJob holds one of the server's threads; a client that goes away must free it, or a few
    abandoned watchers would leave CancelJob (which runs in the same threads) waiting forever."""
    server = create_server("127.0.0.1:0", db_url=f"sqlite:///{tmp_path}/jobs.db", token=TOKEN, ray_address=NO_RAY,
                           allowed_roots=[str(tmp_path)], max_workers=2, limits=HOLD)
    try:
        put_job(server, "quiet", JobState.RUNNING)
        put_job(server, "queued", JobState.QUEUED)
        with grpc.insecure_channel(server.address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            watchers = [stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="quiet", after_sequence=1), metadata=AUTH)
                        for _ in range(2)]
            time.sleep(0.5)  # both wait in the server's two threads for an event that never comes
            for stream in watchers:
                stream.cancel()
            job = stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="queued"), metadata=AUTH, timeout=5)
            assert job.state == jobs_pb2.CANCELLED
    finally:
        server.stop(grace_s=0)
