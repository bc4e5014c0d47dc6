"""The job service end to end: `python -m raysft.service serve` with its embedded Ray cluster, real Ray
jobs, a real SQLite file. One server (and Ray) serves the module, with --max-running-jobs 1; it is killed with
SIGKILL and started again in the middle, and stopped with SIGTERM at the end. On a real PostgreSQL, servers given
that cluster's address (`--ray-address`, as a deployment runs them) are killed too: a lone one, then the leader of
two (the standby takes over). The Ray jobs run one at a time (one of them fails at once on missing data; one waits
in the queue behind another)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ray.job_submission import JobSubmissionClient

from raysft.local_ray import free_port
from raysft.service.client import JobClient, JobServiceError
from raysft.local_ray import ray_auth_token
from raysft.service.server import LEADER_HEALTH
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord, NewEvent, Store
from raysft.service.v1 import jobs_pb2
from service_helpers import http_call

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DATA = str(ROOT / "examples/data/tickets_train.jsonl")
BIN = Path(sys.executable).parent
TOKEN = "integration-token-5f1c"
ARTIFACTS = ROOT / "test-artifacts"  # the console's screenshots (gitignored; CI keeps them)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _running(pid: int) -> bool:
    try:  # a zombie is not running; the cluster is no child of this process to reap
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Service:
    """`python -m raysft.service serve` in a child process: with its embedded Ray cluster, or on `ray` (a dashboard
    URL); several with one `root` share its directories (`name` tells their logs apart). `base`: the session's tiny
    model, whose directory the server is given as an allowed root."""

    def __init__(self, root: Path, db: str = "", ray: str = "", name: str = "server", base: str = ""):
        self.root, self.port, self.http_port, self.ray, self.name, self.base = root, free_port(), free_port(), ray, name, base
        self.db = db or f"sqlite:///{root}/jobs.db"
        self.state_file = root / "runs" / ".ray-cluster.json"
        (root / "token").write_text(TOKEN + "\n")
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        cmd = [sys.executable, "-m", "raysft.service", "serve", "--port", str(self.port), "--db", self.db,
               "--http-port", str(self.http_port),
               "--allowed-root", str(self.root), "--allowed-root", str(ROOT / "examples/data"),
               "--jobs-root", str(self.root / "runs"), "--token-file", str(self.root / "token"), "--max-running-jobs", "1"]
        cmd += ["--ray-address", self.ray] if self.ray else []
        cmd += ["--allowed-root", str(Path(self.base).parent)] if self.base and Path(self.base).parent != self.root else []
        self.starts += 1
        log = open(self.root / f"{self.name}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        log.close()
        deadline = time.time() + 240
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the server did not start: {self.log()[-3000:]}")
                time.sleep(0.5)

    def log(self) -> str:
        return (self.root / f"{self.name}-{self.starts}.log").read_text(errors="replace")

    def leads(self) -> bool:
        """Whether this server is the leader of those sharing its store (its leader health check is SERVING)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=LEADER_HEALTH), timeout=5)
        return check.status == health_pb2.HealthCheckResponse.SERVING

    def client(self) -> JobClient:
        return JobClient(f"127.0.0.1:{self.port}", token=TOKEN)

    def http(self, path: str, method: str = "GET", body=None):
        """(status, JSON body or text) of an HTTP API call with the token."""
        return http_call(self.http_port, path, method, TOKEN, body)

    def ray_address(self) -> str:
        return self.ray or json.loads(self.state_file.read_text())["address"]

    def ray_jobs(self) -> list:
        token = ray_auth_token()
        sdk = JobSubmissionClient(self.ray_address(), headers={"Authorization": f"Bearer {token}"} if token else None)
        return [j for j in sdk.list_jobs() if (j.metadata or {}).get("raysft_job_id")]

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model):
    # Its own embedded Ray, not the session's cluster: the kill -9 tests re-attach a restarted server to it and the
    # last test checks that SIGTERM stops it.
    root = tmp_path_factory.mktemp("service")
    svc = Service(root, base=str(tiny_model))
    svc.start()
    yield svc
    if svc.proc.poll() is None:
        svc.stop()
    if svc.state_file.exists():  # a test failed before the graceful stop: do not leave Ray running
        os.kill(json.loads(svc.state_file.read_text())["pid"], signal.SIGTERM)


def _spec(base, **train):
    return {"model": {"name_or_path": base, "lora": {"rank": 4, "alpha": 8}},
            "data": {"train": [DATA], "validation_split": 0.1, "max_seq_len": 128},
            "train": {"micro_batch_size": 2, "global_batch_size": 2, "learning_rate": 1e-3, **train},
            "checkpoint": {"every_steps": 1, "keep_last": 2}}


def _watch(client, job_id, after=0, into=None):
    """Collect (event, arrival time) until the stream ends."""
    into = [] if into is None else into
    for event in client.watch(job_id, after_sequence=after):
        into.append((event, time.time()))
    return into


def test_a_job_runs_to_success_streaming_its_events_and_listing_its_checkpoints(service):
    with service.client() as client:
        job = client.create_job(_spec(service.base, max_steps=3), labels={"suite": "integration"})
        assert job.state == jobs_pb2.QUEUED and job.spec.output_dir == str(service.root / "runs" / job.id)
        seen = _watch(client, job.id)
        final = client.get_job(job.id)
        kept = client.checkpoints(job.id)
        logs = "".join(client.logs(job.id))
    events = [e for e, _ in seen]
    assert final.state == jobs_pb2.SUCCEEDED, (final.state_reason, final.error.message)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.data["to"] for e in events if e.type == "state_changed"] == ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]
    assert events[-1].type == "state_changed" and events[-1].data["to"] == "SUCCEEDED"
    training = [e for e in events if e.type in ("started", "metrics", "eval", "checkpoint_saved", "checkpoint_pruned", "finished")]
    assert [e.data["step"] for e in training if e.type == "metrics"] == [1, 2, 3]
    assert [e.data["step"] for e in training if e.type == "checkpoint_saved"] == [1, 2, 3]
    assert [e.type for e in training][0] == "started" and training[-1].type == "finished"
    lags = [arrived - e.time.ToNanoseconds() / 1e9 for e, arrived in seen if e in training]
    assert max(lags) < 2.0, f"events took up to {max(lags):.2f} s to reach the watcher"
    # Checkpoints: the ones Ray kept on disk, the best by eval loss marked.
    on_disk = sorted(p.name for p in (service.root / "runs" / job.id / "checkpoints").glob("checkpoint_0*"))
    assert sorted(Path(c.uri).name for c in kept) == on_disk and len(kept) == 2
    best = min(kept, key=lambda c: c.metrics["eval_loss"])
    assert [c.step for c in kept if c.is_best] == [best.step]
    assert final.progress.step == final.progress.total_steps == 3 and final.progress.HasField("eval_loss")
    assert Path(final.output.adapter_uri, "adapter_model.safetensors").is_file()
    assert final.output.summary["steps"] == 3
    assert "::raysft-event::" in logs and "[raysft] done" in logs
    listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", service.ray_address()], capture_output=True, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "token"}, timeout=120)
    assert job.id in listed.stdout, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert (service.root / "runs" / job.id / ".raysft-job").read_text().strip() == job.id  # claimed at CreateJob


def test_a_second_job_waits_in_the_queue_while_the_first_runs_then_runs(service):
    with service.client() as client:
        first = client.create_job(_spec(service.base, max_steps=4), labels={"suite": "queue"})
        while client.get_job(first.id).state == jobs_pb2.QUEUED:  # admitted at once: the one slot is free
            time.sleep(0.1)
        second = client.create_job(_spec(service.base, max_steps=2), labels={"suite": "queue"})
        assert (second.state, second.queue_position) == (jobs_pb2.QUEUED, 1)
        for event in client.watch(first.id):
            if event.type == "metrics":  # the first one is training
                break
        waiting = client.get_job(second.id)
        assert (waiting.state, waiting.queue_position, waiting.ray_submission_id) == (jobs_pb2.QUEUED, 1, "")
        assert not [j for j in service.ray_jobs() if j.submission_id == second.id]  # nothing on Ray yet
        done = client.wait(first.id)
        events = [e for e, _ in _watch(client, second.id)]
        final = client.get_job(second.id)
    assert done.state == final.state == jobs_pb2.SUCCEEDED, final.state_reason
    admitted = next(e for e in events if e.type == "state_changed" and e.data["to"] == "STARTING")
    assert admitted.time.ToNanoseconds() >= done.end_time.ToNanoseconds()  # it left the queue when the first ended
    assert [e.data["to"] for e in events if e.type == "state_changed"] == ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]
    assert final.queue_position == 0 and final.ray_submission_id == second.id


@contextlib.contextmanager
def _console(service):
    """A console page in headless Chromium (Debian's, driven by Playwright), logged in after a refused token."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{service.http_port}/")
            page.fill("#token", "wrong")
            page.click("#login button")
            expect(page.locator("#login-error")).to_have_text("that token was refused")
            page.fill("#token", TOKEN)
            page.click("#login button")
            expect(page.locator("#list")).to_be_visible()
            yield page
        finally:
            browser.close()


def _scrape(service) -> list[str]:
    status, text = service.http("/metrics")
    assert status == 200
    return text.splitlines()


def _sample(lines: list[str], name: str) -> float:
    return float(next(line for line in lines if line.startswith(name + " ")).split()[1])


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_the_console_shows_a_job_advance_and_its_chart_grow_and_cancels_it_while_metrics_count_it(service):
    from playwright.sync_api import expect

    spec = _spec(service.base, max_steps=2000)  # an epoch of the ticket data ends it first; it is cancelled long before
    spec["checkpoint"] = {"every_steps": 4, "keep_last": 2}
    spec["eval"] = {"every_steps": 4}
    with _console(service) as page:
        body = {"spec": spec, "labels": {"team": "support"}, "request_id": "console-1"}
        status, job = service.http("/v1/jobs", "POST", body)
        assert status == 200 and job["state"] == "QUEUED", job
        assert service.http("/v1/jobs", "POST", body)[1]["id"] == job["id"]  # a retried create is the same job
        status, error = service.http("/v1/jobs", "POST", {**body, "spec": {**spec, "train": {**spec["train"], "max_steps": 5}}})
        assert status == 409 and error["error"]["code"] == "ALREADY_EXISTS"
        row = page.locator(f"tr[data-job='{job['id']}']")
        expect(row).to_contain_text("team=support", timeout=10_000)  # the list refreshes every 2 s
        expect(row.locator("td.state")).to_have_text("RUNNING", timeout=300_000)
        expect(row.locator("td.progress")).to_have_text(re.compile(r"^ ?[1-9]\d*/\d+$"), timeout=240_000)
        page.screenshot(path=str(ARTIFACTS / "console-list.png"))
        for state, label, shown in (("SUCCEEDED", "", 0), ("RUNNING", "", 1), ("", "team=other", 0), ("", "team=support", 1)):
            page.select_option("#state-filter", state)
            page.fill("#label-filter", label)
            page.locator("#label-filter").blur()  # the filter applies on change
            expect(row).to_have_count(shown)

        lines = _scrape(service)  # while it runs
        assert 'raysft_jobs{state="RUNNING"} 1.0' in lines and 'raysft_jobs{state="QUEUED"} 0.0' in lines
        assert _sample(lines, "raysft_event_lag_seconds_count") > 0  # training events came from the worker
        assert _sample(lines, "raysft_jobs_created_total") >= 1
        assert any(line.startswith('raysft_rpc_duration_seconds_count{code="200",method="POST /v1/jobs"} ') for line in lines)

        page.click(f"a[href='#job={job['id']}']")
        points = "() => +(document.querySelector('#loss-chart polyline') || {dataset: {}}).dataset.points || 0"
        page.wait_for_function(f"({points})() >= 3", timeout=120_000)
        seen = page.evaluate(f"({points})()")
        page.wait_for_function(f"({points})() > {seen}", timeout=90_000)  # live: points arrive as it trains
        expect(page.locator("#job-state")).to_have_text("RUNNING")
        for series in ("#loss-chart polyline >> nth=1", "#lr-chart polyline", "#tps-chart polyline"):  # eval loss, lr, tokens/s
            expect(page.locator(series)).not_to_have_attribute("data-points", re.compile(r"^0?$"))
        expect(page.locator("#checkpoints tr.best")).to_have_count(1, timeout=120_000)
        expect(page.locator("#events")).to_contain_text("metrics")
        expect(page.locator("#log")).to_contain_text("::raysft-event::", timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "console-job.png"), full_page=True)
        page.click("#cancel")
        expect(page.locator("#job-state")).to_have_text("CANCELLED", timeout=180_000)
        expect(page.locator("#cancel")).to_be_disabled()
        page.screenshot(path=str(ARTIFACTS / "console-cancelled.png"), full_page=True)
    print(f"screenshots in {ARTIFACTS}")
    final = service.http(f"/v1/jobs/{job['id']}")[1]
    assert final["state"] == "CANCELLED" and final["progress"]["step"] < final["progress"]["total_steps"]
    kept = service.http(f"/v1/jobs/{job['id']}/checkpoints")[1]["checkpoints"]
    assert kept and sum(c["is_best"] for c in kept) == 1
    assert "::raysft-event::" in service.http(f"/v1/jobs/{job['id']}/logs?tail_lines=50")[1]["text"]
    lines = _scrape(service)
    assert 'raysft_jobs{state="RUNNING"} 0.0' in lines and 'raysft_jobs{state="CANCELLED"} 1.0' in lines
    assert _sample(lines, 'raysft_job_duration_seconds_count{state="CANCELLED"}') == 1


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_a_tune_job_shows_its_trial_table_with_each_trials_curve(service):
    from playwright.sync_api import expect

    spec = _spec(service.base, max_steps=3)
    spec["checkpoint"] = {"keep_last": 1}
    spec["eval"] = {"every_steps": 3}
    spec["tune"] = {"search_space": {"train.learning_rate": {"grid": [1e-3, 1e-4]}}, "search": "grid",
                    "scheduler": "none", "max_concurrent_trials": 1}
    status, job = service.http("/v1/jobs", "POST", {"spec": spec})
    assert status == 200 and job["kind"] == "TUNE", job
    with service.client() as client:
        final = client.wait(job["id"])
    assert final.state == jobs_pb2.SUCCEEDED, (final.state_reason, final.error.message)
    assert service.http(f"/v1/jobs/{job['id']}")[1]["output"]["summary"]["num_trials"] == 2
    trials = service.http(f"/v1/jobs/{job['id']}/trials")[1]["trials"]
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}, trials
    assert sorted(t["config"]["train.learning_rate"] for t in trials) == [1e-4, 1e-3]
    assert [t["rank"] for t in trials] == [1, 2] and all(t["eval_loss"] is not None for t in trials)
    for trial in trials:
        assert [p["step"] for p in trial["curve"] if "train_loss" in p] == [1, 2, 3], trial["curve"]
    with _console(service) as page:
        page.goto(f"http://127.0.0.1:{service.http_port}/#job={job['id']}")
        rows = page.locator("#trials tr")
        expect(rows).to_have_count(2, timeout=10_000)
        for i, trial in enumerate(trials):
            expect(rows.nth(i).locator("td").first).to_have_text(trial["id"])
            expect(rows.nth(i).locator("polyline")).to_have_attribute("data-points", "3")
        page.screenshot(path=str(ARTIFACTS / "console-tune.png"), full_page=True)


def test_twenty_concurrent_creates_make_one_job_and_cancel_stops_it(service):
    before = len(service.ray_jobs())
    dirs_before = set((service.root / "runs").glob("raysft-*"))
    spec = _spec(service.base, max_steps=2000)
    results, errors = [], []

    def create():
        try:
            with service.client() as c:
                results.append(c.create_job(spec, request_id="concurrent-1").id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20 and len(set(results)) == 1
    job_id = results[0]
    # Each racing create claimed a directory; all but the stored job's were given back.
    assert set((service.root / "runs").glob("raysft-*")) - dirs_before == {service.root / "runs" / job_id}
    with service.client() as client:
        with pytest.raises(JobServiceError) as err:
            client.create_job({**spec, "train": {**spec["train"], "max_steps": 5}}, request_id="concurrent-1")
        assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert [j.id for j in client.list_jobs() if j.request_id == "concurrent-1"] == [job_id]
        for event in client.watch(job_id):  # cancel once it is really training
            if event.type == "metrics":
                break
        assert len(service.ray_jobs()) == before + 1
        followed = []
        follower = threading.Thread(target=lambda: followed.extend(service.client().logs(job_id, follow=True)))
        follower.start()
        cancelling = client.cancel_job(job_id)
        assert cancelling.state in (jobs_pb2.CANCELLING, jobs_pb2.CANCELLED)
        final = client.wait(job_id)
        assert final.state == jobs_pb2.CANCELLED and final.error.code == 1 and final.progress.step < 2000
        follower.join(timeout=30)
        assert not follower.is_alive() and "::raysft-event::" in "".join(followed)  # follow ends with the job
        assert client.cancel_job(job_id).update_time == final.update_time  # idempotent: unchanged
        assert next(j for j in service.ray_jobs() if j.submission_id == job_id).status == "STOPPED"
        client.delete_job(job_id)
        with pytest.raises(JobServiceError) as err:
            client.get_job(job_id)
        assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_a_job_with_bad_data_fails_with_the_cli_error(service):
    spec = _spec(service.base, max_steps=3)
    spec["data"]["train"] = [str(service.root / "missing.jsonl")]
    with service.client() as client:
        job = client.create_job(spec)
        events = [e for e, _ in _watch(client, job.id)]
        final = client.get_job(job.id)
    assert final.state == jobs_pb2.FAILED
    assert final.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]  # `raysft train` exited 2: bad input
    assert "missing.jsonl" in final.error.message and final.state_reason == final.error.message
    assert [e.type for e in events[-2:]] == ["error", "state_changed"] and events[-1].data["to"] == "FAILED"


@pytest.fixture(params=["sqlite", "postgresql"])
def killable(request, service, tmp_path_factory):
    """The module's server (SQLite, embedded Ray), or a server on PostgreSQL using that Ray cluster."""
    if request.param == "sqlite":
        yield service
        return
    other = Service(tmp_path_factory.mktemp("pg"), db=request.getfixturevalue("postgres").create_database(),
                    ray=service.ray_address(), base=service.base)
    other.start()
    yield other
    if other.proc.poll() is None:
        other.stop()


def _events_until_step(client, job_id: str, step: int) -> list:
    """The job's events up to its metrics line of `step` (training has reached it)."""
    seen = []
    for event in client.watch(job_id):
        seen.append(event)
        if event.type == "metrics" and event.data["step"] >= step:
            return seen
    return seen


def test_kill_9_mid_job_loses_nothing_and_the_job_still_finishes(killable):
    service = killable
    spec = _spec(service.base, max_steps=60)
    spec["checkpoint"] = {"every_steps": 20, "keep_last": 2}
    with service.client() as client:
        job_id = client.create_job(spec).id
        before = _events_until_step(client, job_id, 2)
    assert service.stop(signal.SIGKILL) == -signal.SIGKILL
    # A job whose Ray job is gone (the cluster never heard of it): the reconciler must fail it.
    store = Store(service.db)
    store.create_job(JobRecord(id="raysft-ghost", kind="train", spec=spec, state=JobState.RUNNING, submitted_at=time.time()),
                     [NewEvent("info", "state_changed", "→ RUNNING", {"to": "RUNNING"})])
    store.close()
    service.start()
    assert service.ray or "re-attached to the embedded Ray cluster" in service.log()
    with service.client() as client:
        history = list(client.events(job_id))
        resumed = _watch(client, job_id, after=before[-1].sequence)
        final = client.get_job(job_id)
        ghost = client.get_job("raysft-ghost")
    assert [(e.sequence, e.type, e.message) for e in history[:len(before)]] == [(e.sequence, e.type, e.message) for e in before]
    every = before + [e for e, _ in resumed]
    assert [e.sequence for e in every] == list(range(1, len(every) + 1)), "each event exactly once, no gaps"
    assert [e.data["step"] for e in every if e.type == "metrics"] == list(range(1, 61))
    assert final.state == jobs_pb2.SUCCEEDED and every[-1].data["to"] == "SUCCEEDED"
    assert ghost.state == jobs_pb2.FAILED and "no longer exists on the cluster" in ghost.state_reason
    assert ghost.error.code == grpc.StatusCode.UNAVAILABLE.value[0]


def test_two_servers_on_postgresql_a_standby_takes_over_from_a_killed_leader_and_nothing_is_lost(service, postgres,
                                                                                                 tmp_path_factory):
    root, db = tmp_path_factory.mktemp("pair"), postgres.create_database()
    leader, standby = (Service(root, db=db, ray=service.ray_address(), name=name, base=service.base)
                       for name in ("leader", "standby"))
    spec = _spec(service.base, max_steps=60)
    spec["checkpoint"] = {"every_steps": 20, "keep_last": 2}
    try:
        leader.start()
        standby.start()
        assert leader.leads() and not standby.leads()
        with standby.client() as client:  # stored by the standby, submitted by the leader
            job_id = client.create_job(spec).id
            before = _events_until_step(client, job_id, 2)
        killed = time.monotonic()
        assert leader.stop(signal.SIGKILL) == -signal.SIGKILL
        while not standby.leads():
            assert time.monotonic() - killed < 15, "the standby did not take over within 15 s"
            time.sleep(0.1)
        took = time.monotonic() - killed
        print(f"the standby took over {took:.2f} s after the leader's kill -9")
        with standby.client() as client:
            every = before + [e for e, _ in _watch(client, job_id, after=before[-1].sequence)]
            final = client.get_job(job_id)
            kept = client.checkpoints(job_id)
        leader.start()  # back, as a standby now: a cancel it receives stops the job the other one follows
        assert not leader.leads() and standby.leads()
        cancelled = _cancelled_while_running(leader, _spec(service.base, max_steps=2000))
    finally:
        for server in (leader, standby):
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
    assert "standby: another server leads" in standby.log() and "leader: this server now runs" in standby.log()
    assert final.state == jobs_pb2.SUCCEEDED, (final.state_reason, final.error.message)
    assert [e.sequence for e in every] == list(range(1, len(every) + 1)), "each event exactly once, no gaps"
    assert [e.data["step"] for e in every if e.type == "metrics"] == list(range(1, 61))
    moves = [e.data["to"] for e in every if e.type == "state_changed"]
    assert moves == ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"], moves
    assert [e.data["step"] for e in every if e.type == "checkpoint_saved"] == [20, 40, 60]
    on_disk = sorted(p.name for p in (root / "runs" / job_id / "checkpoints").glob("checkpoint_0*"))
    assert sorted(Path(c.uri).name for c in kept) == on_disk and sorted(c.step for c in kept) == [40, 60]
    assert {j.submission_id for j in service.ray_jobs() if j.metadata.get("raysft_job_id") == job_id} == {job_id}
    assert cancelled.state == jobs_pb2.CANCELLED and cancelled.progress.step < 2000
    assert {j.submission_id: j.status for j in service.ray_jobs() if j.submission_id == cancelled.id} == {cancelled.id: "STOPPED"}


def _cancelled_while_running(server, spec):
    """Create a job on `server`, cancel it there once it trains; the job as it ended."""
    with server.client() as client:
        job_id = client.create_job(spec).id
        for event in client.watch(job_id):
            if event.type == "metrics":
                break
        assert client.cancel_job(job_id).state in (jobs_pb2.CANCELLING, jobs_pb2.CANCELLED)
        return client.wait(job_id)


def _until_checkpoint(client, job_id, after, past_step=0):
    """Events after `after` until a checkpoint beyond `past_step` is saved; the events seen."""
    seen = []
    for event in client.watch(job_id, after_sequence=after):
        seen.append(event)
        if event.type == "checkpoint_saved" and event.data["step"] > past_step:
            return seen
    raise AssertionError(f"job {job_id} ended before saving a checkpoint past step {past_step}: {seen[-3:]}")


def _driver_pid(service, submission_id):
    token = ray_auth_token()
    sdk = JobSubmissionClient(service.ray_address(), headers={"Authorization": f"Bearer {token}"} if token else None)
    return sdk.get_job_info(submission_id).driver_info.pid


def test_a_killed_driver_is_retried_and_a_cancelled_job_resumes_each_attempt_at_its_checkpoint(service, mlflow_uri):
    spec = _spec(service.base, max_steps=28)
    spec["checkpoint"] = {"every_steps": 4, "keep_last": 2}
    spec["tracking"] = {"mlflow": {"tracking_uri": mlflow_uri, "experiment": "service-attempts"}}
    with service.client() as client:
        job = client.create_job(spec, max_attempts=2, labels={"team": "support"})
        assert (job.attempt, job.max_attempts) == (1, 2)
        events = _until_checkpoint(client, job.id, 0)
        killed_at = events[-1].data["step"]
        # Attempt 1: its driver dies (SIGKILL from outside): a SYSTEM failure, retried as attempt 2.
        os.kill(int(_driver_pid(service, job.id)), signal.SIGKILL)
        events += _until_checkpoint(client, job.id, events[-1].sequence, past_step=killed_at)
        second = client.get_job(job.id)
        assert second.attempt == 2 and second.ray_submission_id == f"{job.id}-a2"
        with pytest.raises(JobServiceError) as err:
            client.resume_job(job.id)  # still running
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cancel it first" in err.value.message
        # Attempt 2: cancelled by the client (never retried), then resumed by hand as attempt 3.
        client.cancel_job(job.id)
        cancelled = client.wait(job.id)
        assert cancelled.state == jobs_pb2.CANCELLED and cancelled.progress.step < 28
        events += list(client.events(job.id, after_sequence=events[-1].sequence))
        latest = max(c.step for c in client.checkpoints(job.id))
        resumed = client.resume_job(job.id)
        assert resumed.state == jobs_pb2.QUEUED and resumed.attempt == 3 and not resumed.error.code
        events += [e for e, _ in _watch(client, job.id, after=events[-1].sequence)]
        final = client.get_job(job.id)
        logs = "".join(client.logs(job.id))
        with pytest.raises(JobServiceError) as err:
            client.resume_job(job.id)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "SUCCEEDED" in err.value.message
    assert final.state == jobs_pb2.SUCCEEDED and final.attempt == 3, (final.state_reason, final.error.message)
    assert final.ray_submission_id == f"{job.id}-a3" and final.progress.step == 28
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)), "one gap-free sequence across attempts"
    moves = [(e.data["from"], e.data["to"]) for e in events if e.type == "state_changed"]
    assert moves == [("", "QUEUED"), ("QUEUED", "STARTING"), ("STARTING", "RUNNING"), ("RUNNING", "QUEUED"),
                     ("QUEUED", "STARTING"), ("STARTING", "RUNNING"), ("RUNNING", "CANCELLING"),
                     ("CANCELLING", "CANCELLED"), ("CANCELLED", "QUEUED"), ("QUEUED", "STARTING"),
                     ("STARTING", "RUNNING"), ("RUNNING", "SUCCEEDED")], moves
    retry = next(e for e in events if e.type == "state_changed" and e.data["from"] == "RUNNING" and e.data["to"] == "QUEUED")
    assert "retrying as attempt 2 of 2" in retry.message
    # Each later attempt starts at a checkpoint of the one before, never at step 0.
    starts = [e.data["step"] for e in events if e.type == "resumed"]
    assert len(starts) == 2 and starts[0] >= killed_at and starts[0] % 4 == 0 and starts[1] == latest > starts[0]
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    third = steps[len(steps) - steps[::-1].index(latest + 1) - 1:]  # the metrics of attempt 3
    assert third == list(range(latest + 1, 29))
    assert f"resumed from the checkpoint at step {latest}" in logs  # the log of attempt 3's Ray job
    ray_ids = {j.submission_id: j.status for j in service.ray_jobs() if j.metadata.get("raysft_job_id") == job.id}
    assert ray_ids == {job.id: "FAILED", f"{job.id}-a2": "STOPPED", f"{job.id}-a3": "SUCCEEDED"}
    # Three attempts are one MLflow run, tagged with the job's id and labels, each step logged once.
    from mlflow.tracking import MlflowClient

    tracker = MlflowClient(mlflow_uri)
    runs = tracker.search_runs([tracker.get_experiment_by_name("service-attempts").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["raysft.job_id"] == job.id and runs[0].data.tags["team"] == "support"
    assert sorted(m.step for m in tracker.get_metric_history(runs[0].info.run_id, "train_loss")) == list(range(1, 29))


def test_a_data_error_is_a_user_error_and_never_retried(service):
    bad = service.root / "only-invalid.jsonl"
    bad.write_text('{"messages": "not a list"}\n{"text": "no messages"}\nnot json at all\n')
    spec = _spec(service.base, max_steps=3)
    spec["data"]["train"] = [str(bad)]
    with service.client() as client:
        job = client.create_job(spec, max_attempts=3)
        events = [e for e, _ in _watch(client, job.id)]
        final = client.get_job(job.id)
        with pytest.raises(JobServiceError) as err:
            client.resume_job(job.id)
    assert final.state == jobs_pb2.FAILED and final.attempt == 1 and final.error_kind == jobs_pb2.USER
    assert final.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "no valid conversations" in final.error.message
    assert not [e for e in events if e.type == "state_changed" and e.data["to"] == "QUEUED" and e.data["from"]]
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "no checkpoint" in err.value.message


def test_sigterm_shuts_down_gracefully_and_stops_the_embedded_ray(service):
    pid = json.loads(service.state_file.read_text())["pid"]
    assert service.stop(signal.SIGTERM) == 0
    assert "shutting down" in service.log()
    assert not service.state_file.exists()
    deadline = time.time() + 30
    while time.time() < deadline and _running(pid):
        time.sleep(0.5)
    assert not _running(pid), "the embedded Ray cluster is still running"
