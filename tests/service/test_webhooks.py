"""Webhooks: the URL policy, signed deliveries to a real receiver on 127.0.0.1 (in order, retried with backoff,
across a server restart, given up after the deadline) and the outbox shared by two senders, on SQLite and PostgreSQL."""

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from raysft.cli import service_main as main
from raysft.service.jobs.events import transition
from raysft.service.server import create_server
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord, NewEvent, Store
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from raysft.service.jobs.webhooks import WebhookPolicy, WebhookSender, payload, sign
from service_helpers import AUTH, HOLD, NO_RAY, TOKEN

SECRET = b"webhook-test-secret-0123456789abcdef"
SPEC = {"model": {"name_or_path": "m"}, "data": {"train": [{"path": "/x.jsonl"}]}, "output_dir": "/runs/x"}


# ------------------------------------------------------------------------------------ URL policy


def _policy(*prefixes):
    return WebhookPolicy(allow_prefixes=prefixes or ("https://hooks.example.com/raysft",), secret=SECRET)


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/raysft", "https://hooks.example.com/raysft/team-a?x=1", "https://HOOKS.example.com/raysft/",
    "https://hooks.example.com:443/raysft/a",
])
def test_urls_under_an_allowed_prefix_pass(url):
    assert _policy().problems([url]) == []


@pytest.mark.parametrize("url, says", [
    ("https://hooks.example.com.evil.net/raysft", "not under a URL prefix"),
    ("https://evil.net/https://hooks.example.com/raysft", "not under a URL prefix"),
    ("https://hooks.example.com/raysftevil", "not under a URL prefix"),
    ("https://hooks.example.com:8443/raysft", "not under a URL prefix"),
    ("http://hooks.example.com/raysft", "not under a URL prefix"),
    ("https://hooks.example.com/raysft/../admin", ". or .. path segments"),
    ("https://hooks.example.com/raysft/%2e%2e/admin", ". or .. path segments"),
    ("https://user:pw@hooks.example.com/raysft", "credentials"),
    ("https://hooks.example.com@evil.net/raysft", "credentials"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://hooks.example.com/raysft", "http:// or https://"),
    ("https://hooks.example.com/raysft/a b", "without spaces"),
    ("https://hooks.example.com\\@evil.net/raysft", "backslashes"),
    ("https://hooks.example.com/raysft/" + "a" * 2100, "at most 2048"),
    ("https://hooks.example.com:99999/raysft", "invalid port"),
    ("", "non-empty"),
])
def test_hostile_urls_are_refused_naming_the_index(url, says):
    problems = _policy().problems(["https://hooks.example.com/raysft/ok", url])
    assert len(problems) == 1 and problems[0].field == "notify_urls[1]" and says in problems[0].message, problems


def test_count_duplicates_and_a_server_without_prefixes():
    ok = [f"https://hooks.example.com/raysft/{i}" for i in range(6)]
    assert "at most 5" in _policy().problems(ok)[0].message
    dup = _policy().problems([ok[0], ok[0]])
    assert [(p.field, p.message) for p in dup] == [("notify_urls[1]", "repeats notify_urls[0]")]
    refused = WebhookPolicy(urls=("https://ops.example.com/all",), secret=SECRET).problems([ok[0]])
    assert refused[0].field == "notify_urls" and "--webhook-allow-prefix" in refused[0].message


def test_operator_settings_are_checked_at_start():
    with pytest.raises(ValueError, match="--webhook-secret-file"):
        WebhookPolicy(urls=("https://ops.example.com/all",))
    with pytest.raises(ValueError, match="--webhook-allow-prefix 'ftp://x'.*http"):
        WebhookPolicy(allow_prefixes=("ftp://x",), secret=SECRET)
    with pytest.raises(ValueError, match="without a \\?query"):
        WebhookPolicy(allow_prefixes=("https://x/a?b=1",), secret=SECRET)


# ------------------------------------------------------------------------------------- receiver


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks each signature and answers 500 to the first `fail` POSTs."""

    def __init__(self, fail: int = 0, redirect: bool = False):
        self.fail, self.redirect, self.got = fail, redirect, []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                with receiver._cond:
                    receiver.got.append({"path": self.path, "time": time.time(), "body": json.loads(body),
                                         "delivery": self.headers["X-Raysft-Delivery"],
                                         "signed": hmac.compare_digest(expected, self.headers["X-Raysft-Signature"])})
                    failing = len(receiver.got) <= receiver.fail
                    receiver._cond.notify_all()
                if receiver.redirect and self.path != "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/moved")
                else:
                    self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.got) >= n, timeout), f"got {len(self.got)} of {n}: {self.got}"
            return list(self.got)

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _server(db_url, workdir, receiver, backoff_s=0.2):
    policy = WebhookPolicy(urls=(receiver.url + "/all",), allow_prefixes=(receiver.url + "/jobs",), secret=SECRET)
    return create_server("127.0.0.1:0", db_url=db_url, token=TOKEN, ray_address=NO_RAY, allowed_roots=[str(workdir)],
                         jobs_root=str(workdir / "runs"), webhooks=policy, webhook_backoff_s=backoff_s, limits=HOLD)


def _queue(store, job_id, notify_urls=()):
    created = NewEvent("info", "state_changed", "→ QUEUED", {"from": "", "to": "QUEUED", "reason": "accepted"})
    store.create_job(JobRecord(id=job_id, kind="train", spec=SPEC, notify_urls=list(notify_urls)), [created])


def _move(store, job_id, to, output=None):
    def change(job, _ckpts):
        job.output = output or job.output
        return [transition(job, to, f"to {to.value}")]
    store.update(job_id, change)


# ------------------------------------------------------------------------------------ deliveries


@pytest.mark.integration
def test_every_state_change_reaches_both_urls_signed_and_in_order(db_url, tmp_path, receiver):
    server = _server(db_url, tmp_path, receiver)
    try:
        _queue(server.store, "job-a", [receiver.url + "/jobs/a"])
        for state in (JobState.STARTING, JobState.RUNNING):
            _move(server.store, "job-a", state)
        _move(server.store, "job-a", JobState.SUCCEEDED, {"adapter_dir": "/runs/x/adapter"})
        got = receiver.wait_for(8)
    finally:
        server.stop(grace_s=1)
    assert all(g["signed"] and g["delivery"] == g["body"]["delivery_id"] for g in got)
    for path in ("/all", "/jobs/a"):
        bodies = [g["body"] for g in got if g["path"] == path]
        assert [(b["previous_state"], b["state"]) for b in bodies] == [
            (None, "QUEUED"), ("QUEUED", "STARTING"), ("STARTING", "RUNNING"), ("RUNNING", "SUCCEEDED")]
        assert {b["job_id"] for b in bodies} == {"job-a"} and [b["sequence"] for b in bodies] == [1, 2, 3, 4]
        assert bodies[-1]["output"] == {"adapter_dir": "/runs/x/adapter"} and bodies[-1]["time"].endswith("Z")
    assert len({g["delivery"] for g in got}) == 8


@pytest.mark.integration
def test_a_failing_receiver_gets_the_same_delivery_again_with_backoff_across_a_restart(db_url, tmp_path):
    receiver = Receiver(fail=2)
    first = _server(db_url, tmp_path, receiver, backoff_s=0.5)
    try:
        _queue(first.store, "job-b")
        receiver.wait_for(1)
    finally:
        first.stop(grace_s=1)  # the delivery failed once and is due again: it waits in the store
    pending = Store(db_url).deliveries("job-b")
    assert [(d.status, d.attempts, d.last_error) for d in pending] == [("pending", 1, "HTTP 500")]
    second = _server(db_url, tmp_path, receiver, backoff_s=0.5)
    try:
        got = receiver.wait_for(3)
        deadline = time.time() + 10
        while second.store.deliveries("job-b")[0].status != "delivered" and time.time() < deadline:
            time.sleep(0.05)
        done = second.store.deliveries("job-b")[0]
    finally:
        second.stop(grace_s=1)
        receiver.close()
    assert [g["delivery"] for g in got] == [pending[0].id] * 3 and all(g["signed"] for g in got)
    assert (done.status, done.attempts, done.last_error) == ("delivered", 3, "")
    gaps = [b["time"] - a["time"] for a, b in zip(got, got[1:])]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps  # 0.5 s, then doubled


@pytest.mark.integration
def test_a_dead_receiver_is_given_up_after_the_deadline_and_later_changes_still_go_out(db_url):
    receiver = Receiver(fail=10**6)
    store = Store(db_url, webhooks=(receiver.url + "/all",))
    sender = WebhookSender(store, SECRET, backoff_base_s=0.1, give_up_after_s=0.6, poll_s=0.05)
    sender.start()
    try:
        _queue(store, "job-c")
        _move(store, "job-c", JobState.CANCELLED)
        deadline = time.time() + 15
        while [d.status for d in store.deliveries("job-c")] != ["failed", "failed"] and time.time() < deadline:
            time.sleep(0.05)
    finally:
        sender.stop()
        receiver.close()
        store.close()
    states = [g["body"]["state"] for g in receiver.got]
    first_cancelled = states.index("CANCELLED")
    assert first_cancelled >= 2 and set(states[:first_cancelled]) == {"QUEUED"}  # in order: never overtaken
    assert set(states[first_cancelled:]) == {"CANCELLED"}


@pytest.mark.integration
def test_redirects_are_not_followed(db_url):
    receiver = Receiver(redirect=True)
    store = Store(db_url, webhooks=(receiver.url + "/all",))
    sender = WebhookSender(store, SECRET, backoff_base_s=60, poll_s=0.05)
    sender.start()
    try:
        _queue(store, "job-d")
        receiver.wait_for(1)
        deadline = time.time() + 10
        while store.deliveries("job-d")[0].attempts == 0 and time.time() < deadline:
            time.sleep(0.05)
        delivery = store.deliveries("job-d")[0]
    finally:
        sender.stop()
        receiver.close()
        store.close()
    assert [g["path"] for g in receiver.got] == ["/all"]
    assert (delivery.status, delivery.last_error) == ("pending", "HTTP 302")


@pytest.mark.integration
def test_two_senders_on_one_store_send_each_delivery_once(db_url, receiver):
    stores = [Store(db_url, webhooks=(receiver.url + "/all",)) for _ in range(2)]
    for i in range(20):
        _queue(stores[0], f"job-{i}")
        _move(stores[0], f"job-{i}", JobState.CANCELLED)
    senders = [WebhookSender(s, SECRET, poll_s=0.05) for s in stores]
    for sender in senders:
        sender.start()
    try:
        got = receiver.wait_for(40)
        time.sleep(0.5)  # room for a duplicate to show up
    finally:
        for sender in senders:
            sender.stop()
        for store in stores:
            store.close()
    ids = [g["delivery"] for g in receiver.got]
    assert len(got) == 40 and len(ids) == len(set(ids)) == 40


def test_signature_is_the_hmac_of_the_exact_body():
    body = b'{"job_id":"x"}'
    assert sign(SECRET, body) == "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------ API and CLI


@pytest.fixture(scope="module")
def api_receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def api_server(workdir, api_receiver):
    policy = WebhookPolicy(allow_prefixes=(api_receiver.url + "/jobs",), secret=SECRET)
    server = create_server("127.0.0.1:0", db_url=f"sqlite:///{workdir}/webhooks-api.db", token=TOKEN, ray_address=NO_RAY,
                           allowed_roots=[str(workdir)], jobs_root=str(workdir / "runs"), http_port=0, webhooks=policy,
                           limits=HOLD)
    yield server
    server.stop(grace_s=1)


def _http(server, body):
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/v1/jobs", method="POST",
                                     data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {TOKEN}",
                                                                             "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.integration
def test_notify_urls_are_checked_alike_over_grpc_and_http_and_a_cancel_is_delivered(api_server, api_receiver, workdir):
    spec = {"model": {"name_or_path": str(workdir / "model")}, "data": {"train": str(workdir / "data.jsonl")}}
    good, bad = api_receiver.url + "/jobs/team-a", api_receiver.url.replace("127.0.0.1", "127.0.0.1.nip.io") + "/jobs"
    status, body = _http(api_server, {"spec": spec, "validate_only": True, "notify_urls": [good, bad]})
    assert status == 400 and [v["field"] for v in body["error"]["violations"]] == ["notify_urls[1]"]
    with grpc.insecure_channel(api_server.address) as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateJob(jobs_pb2.CreateJobRequest(spec=spec_to_proto(spec), validate_only=True, notify_urls=[good, bad]),
                           metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "notify_urls[1]" in err.value.details()
        _queue(api_server.store, "job-api", [good])
        assert list(stub.GetJob(jobs_pb2.GetJobRequest(job_id="job-api"), metadata=AUTH).notify_urls) == [good]
        stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="job-api"), metadata=AUTH)
    got = api_receiver.wait_for(2)
    assert [(g["path"], g["body"]["state"], g["signed"]) for g in got] == [
        ("/jobs/team-a", "QUEUED", True), ("/jobs/team-a", "CANCELLED", True)]
    status, body = _http(api_server, {"spec": spec, "validate_only": True, "notify_urls": [good]})
    assert status == 200 and body["notify_urls"] == [good]


@pytest.mark.integration
def test_cli_submit_notify_and_serve_flags(api_server, api_receiver, workdir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYSFT_SERVER", api_server.address)
    monkeypatch.setenv("RAYSFT_TOKEN", TOKEN)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps({"model": {"name_or_path": str(workdir / "model")},
                                     "data": {"train": [str(workdir / "data.jsonl")]}}))
    url = api_receiver.url + "/jobs/cli"
    assert main(["jobs", "submit", str(spec_file), "--notify", url, "--validate-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notify_urls"] == [url]
    assert main(["jobs", "submit", str(spec_file), "--notify", "http://127.0.0.1:22/", "--validate-only"]) == 2
    assert "notify_urls[0]: is not under a URL prefix" in capsys.readouterr().err
    no_ray = ["--ray-address", NO_RAY, "--db", f"sqlite:///{tmp_path}/j.db", "--port", "0"]
    assert main(["serve", "--webhook", "https://ops.example.com/all", *no_ray]) == 2
    assert "pass --webhook-secret-file" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    assert main(["serve", "--webhook-allow-prefix", "https://x", "--webhook-secret-file", str(tmp_path / "empty"),
                 *no_ray]) == 2
    assert "webhook secret file" in capsys.readouterr().err


def test_payload_is_plain_json_whatever_the_summary_holds():
    body = json.loads(payload("d1", "j", 3, "FAILED", "RUNNING", "boom", 0.0,
                              {"output_dir": "/o", "summary": {"eval_loss": float("nan"), "best": [float("inf"), 1.0]}}))
    assert body["output"] == {"output_dir": "/o", "summary": {"eval_loss": None, "best": [None, 1.0]}}
    assert (body["time"], body["previous_state"], body["sequence"]) == ("1970-01-01T00:00:00Z", "RUNNING", 3)
    big = json.loads(payload("d2", "j", 1, "SUCCEEDED", "", "", 0.0, {"output_dir": "/o", "summary": {"x": "a" * 40_000}}))
    assert big["output"] == {"output_dir": "/o"} and big["previous_state"] is None


@pytest.mark.integration
def test_finished_deliveries_are_pruned_and_pending_ones_kept(db_url, receiver):
    store = Store(db_url, webhooks=(receiver.url + "/all",))
    try:
        _queue(store, "job-p")
        [d] = store.deliveries("job-p")
        store.finish_delivery(d.id, delivered_at=time.time())
        _move(store, "job-p", JobState.CANCELLED)
        assert store.prune_deliveries(time.time() + 1) == 1
        assert [d.status for d in store.deliveries("job-p")] == ["pending"]
    finally:
        store.close()


@pytest.mark.integration
def test_a_store_from_before_webhooks_gains_the_column_and_the_outbox(db_url):
    from sqlalchemy import create_engine, text

    Store(db_url).create_job(JobRecord(id="old-w", kind="train", spec=SPEC), [NewEvent("info", "x", "y")])
    engine = create_engine(db_url)
    with engine.begin() as conn:  # as an older server left it
        conn.execute(text("ALTER TABLE jobs DROP COLUMN notify_urls"))
        conn.execute(text("DROP TABLE webhook_deliveries"))
    engine.dispose()
    store = Store(db_url, webhooks=("https://ops.example.com/all",))
    try:
        assert store.get_job("old-w").notify_urls == []
        _move(store, "old-w", JobState.CANCELLED)
        assert [json.loads(d.body)["state"] for d in store.deliveries("old-w")] == ["CANCELLED"]
    finally:
        store.close()
