"""Fixtures of the job service tests: a real gRPC server on 127.0.0.1 with a real SQLite or PostgreSQL store.

`postgres` is one real PostgreSQL server for the session (pg_server.py); `db_url` gives each test a fresh
database, once on SQLite and once on PostgreSQL (tests taking it run twice, ids `[sqlite]` / `[postgresql]`).

`offline_server` points its runner at a Ray address where nothing listens: everything that needs no Ray
job (validation, auth, reads, cancel of a job not yet on Ray) runs for real, and a CreateJob that would
reach Ray gets UNAVAILABLE. Its admission queue holds every QUEUED job (--max-running-jobs 0). Jobs in other states are written straight into its store (service_helpers.put_job).
"""

import os

import grpc
import pytest

from raysft.service.server import create_server
from raysft.service.v1 import jobs_pb2_grpc
from pg_server import PostgresServer
from service_helpers import HOLD, NO_RAY, TOKEN

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True, scope="session")
def _token_file_of_the_tests(tmp_path_factory):
    """`raysft serve` / `raysft jobs` default to ~/.raysft/token: the tests' own, never the user's."""
    old = os.environ.get("RAYSFT_TOKEN_FILE")
    os.environ["RAYSFT_TOKEN_FILE"] = str(tmp_path_factory.mktemp("home") / "token")
    yield
    if old is None:
        os.environ.pop("RAYSFT_TOKEN_FILE")
    else:
        os.environ["RAYSFT_TOKEN_FILE"] = old


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 (started once per session, stopped and removed at the end)."""
    server = PostgresServer().start()
    yield server
    server.stop()


def _fresh_db(backend: str, directory, request) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory}/jobs.db"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """The URL of a fresh, empty job store for this test: a SQLite file, or a new PostgreSQL database."""
    return _fresh_db(request.param, tmp_path, request)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    (root / "model").mkdir()
    (root / "data.jsonl").write_text('{"messages": []}\n')
    return root


@pytest.fixture(scope="module", params=BACKENDS)
def offline_server(request, workdir):
    db = _fresh_db(request.param, workdir / request.param, request)
    server = create_server("127.0.0.1:0", db_url=db, token=TOKEN, ray_address=NO_RAY,
                           allowed_roots=[str(workdir)], jobs_root=str(workdir / "runs"), limits=HOLD)
    yield server
    server.stop(grace_s=1)


@pytest.fixture(scope="module")
def server(offline_server):
    """The server `channel` and `stub` talk to: the offline one, unless a module defines a `server` of its own."""
    return offline_server


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return jobs_pb2_grpc.JobServiceStub(channel)
