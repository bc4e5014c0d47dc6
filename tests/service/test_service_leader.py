"""Servers sharing one store: one leader runs the job followers, the others answer RPCs and take over when it goes.

On SQLite (a file's flock) and on a real PostgreSQL (an advisory lock held by a session). No Ray: the servers
point at an address where nothing listens, so an admitted job stays STARTING (its follower waits for Ray)
and shows up in `supervisor.followed()`. The kill -9 of a leader process is in test_service_integration.py.
"""

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from raysft.service.jobs.leader import LEADER_LOCK, Leadership
from raysft.service.server import LEADER_HEALTH, create_server
from raysft.service.jobs.states import JobState
from service_helpers import NO_RAY, TOKEN, put_job


def _until(condition, timeout_s: float, what: str) -> float:
    """Seconds until `condition()` holds; fails after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _leader_health(server) -> int:
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=LEADER_HEALTH), timeout=5).status


def _serve(db_url, root):
    return create_server("127.0.0.1:0", db_url=db_url, token=TOKEN, ray_address=NO_RAY, allowed_roots=[str(root)],
                         jobs_root=str(root / "runs"), poll_s=0.1)


def test_one_of_two_servers_follows_jobs_both_store_and_the_standby_takes_over(db_url, tmp_path):
    first = _serve(db_url, tmp_path)
    second = _serve(db_url, tmp_path)
    try:
        assert first.is_leader and not second.is_leader
        assert _leader_health(first) == health_pb2.HealthCheckResponse.SERVING
        assert _leader_health(second) == health_pb2.HealthCheckResponse.NOT_SERVING
        # A job stored by the standby is admitted and followed by the leader (its poll of the store), never by the
        # standby.
        put_job(second, "raysft-on-standby", JobState.QUEUED)
        second.supervisor.follow("raysft-on-standby")  # a standby's supervisor is stopped: this does nothing
        _until(lambda: "raysft-on-standby" in first.supervisor.followed(), 5, "the leader follows the standby's job")
        assert second.supervisor.followed() == []
        first.stop(grace_s=1)  # the followers stop, then the lock is let go
        took = _until(lambda: second.is_leader, 10, "the standby takes over")
        assert took < 3.0  # retried every 2 s
        assert "raysft-on-standby" in second.supervisor.followed()
        assert _leader_health(second) == health_pb2.HealthCheckResponse.SERVING
        # Admitted once (by the first leader), followed again by the new one: nothing ran twice or got lost.
        assert second.store.get_job("raysft-on-standby").state == JobState.STARTING
        moves = [e.data.get("to") for e in second.store.events("raysft-on-standby") if e.type == "state_changed"]
        assert moves.count(JobState.STARTING.value) == 1
    finally:
        first.stop(grace_s=1)
        second.stop(grace_s=1)


class _Recorder:
    def __init__(self):
        self.calls: list[str] = []
        self.changed = threading.Event()

    def acquire(self):
        self.calls.append("acquire")
        self.changed.set()

    def lose(self):
        self.calls.append("lose")
        self.changed.set()


def test_a_leader_whose_postgresql_session_ends_stops_and_the_standby_takes_the_lock(postgres):
    url = postgres.create_database()
    a, b = _Recorder(), _Recorder()
    first = Leadership(url, a.acquire, a.lose, retry_s=0.2)
    second = Leadership(url, b.acquire, b.lose, retry_s=0.2)
    first.start()
    second.start()
    try:
        assert first.is_leader and not second.is_leader and a.calls == ["acquire"] and b.calls == []
        engine = create_engine(url)
        with engine.connect() as c:  # the leader's session ends (a database restart or a failover looks the same)
            pid = c.execute(text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :lo AND granted"),
                            {"lo": LEADER_LOCK & 0xFFFFFFFF}).scalar_one()
            c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _until(lambda: "lose" in a.calls, 5, "the old leader notices its lost session")
        _until(lambda: first.is_leader or second.is_leader, 5, "one of them leads again")
        time.sleep(0.5)  # a few more rounds of both: still one leader, started once more
        assert first.is_leader != second.is_leader
        assert a.calls[:2] == ["acquire", "lose"] and len(a.calls) - 2 + len(b.calls) == 1
        engine.dispose()
    finally:
        first.stop()
        second.stop()
    assert (a.calls + b.calls).count("acquire") == (a.calls + b.calls).count("lose")  # stop() lets go as a leader


def test_a_second_server_on_one_sqlite_file_is_a_standby_until_the_first_exits(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    a, b = _Recorder(), _Recorder()
    first = Leadership(url, a.acquire, a.lose, retry_s=0.1)
    second = Leadership(url, b.acquire, b.lose, retry_s=0.1)
    first.start()
    second.start()
    assert (tmp_path / "jobs.db.leader").exists()
    time.sleep(0.3)
    assert first.is_leader and not second.is_leader and b.calls == []
    first.stop()
    _until(lambda: second.is_leader, 2, "the standby takes the file lock")
    second.stop()
    assert a.calls == b.calls == ["acquire", "lose"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_always_leads(url):
    calls = []
    leadership = Leadership(url, lambda: calls.append("acquire"), lambda: calls.append("lose"))
    leadership.start()
    assert leadership.is_leader and calls == ["acquire"]
    leadership.stop()
