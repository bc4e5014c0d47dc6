"""The embedded Ray cluster of `raysft serve`: started on free ports, it retries on fresh ones when a port it chose
is taken before Ray binds it, and says what `ray start` said when it cannot start at all."""

import socket

import pytest
from ray.job_submission import JobSubmissionClient

from raysft.local_ray import free_port
from raysft.local_ray import cluster as cluster_module
from raysft.local_ray.cluster import LocalRayCluster
from raysft.local_ray import ray_auth_token

pytestmark = pytest.mark.integration


def test_a_port_taken_before_ray_binds_it_is_retried_on_fresh_ports(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        chosen = [taken.getsockname()[1]]  # the first port chosen is the dashboard's
        monkeypatch.setattr(cluster_module, "free_port", lambda: chosen.pop() if chosen else free_port())
        cluster = LocalRayCluster(tmp_path / "cluster.json", num_cpus=1)
        try:
            address = cluster.start(timeout_s=150)
            assert address != f"http://127.0.0.1:{taken.getsockname()[1]}"
            jobs = JobSubmissionClient(address, headers={"Authorization": f"Bearer {ray_auth_token()}"})
            assert jobs.list_jobs() == []  # the Jobs API of the new cluster answers
            assert (tmp_path / "cluster.json").is_file()
        finally:
            cluster.stop()
    assert not (tmp_path / "cluster.json").exists()


def test_a_cluster_that_cannot_start_says_why(tmp_path, monkeypatch):
    chosen = []
    with socket.socket() as taken:  # every port it chooses, on every attempt, is this taken one
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(cluster_module, "free_port", lambda: chosen.append(taken.getsockname()[1]) or chosen[-1])
        with pytest.raises(RuntimeError, match=r"(?s)did not start; `ray start` said:.+ValueError: .*port number \d+"):
            LocalRayCluster(tmp_path / "cluster.json", num_cpus=1).start(timeout_s=150)
    assert len(chosen) == 3 * 4  # three attempts, four ports each
    assert not (tmp_path / "cluster.json").exists()
