"""The embedded local Ray answers State API queries from its own processes (Ray Train's placement-group cleaner
asks it whether a run's controller is alive; without an answer every run ends waiting for the cleaner)."""

import socket

import pytest
import ray

from raysft.local_ray import connect
from raysft.local_ray.connect import connect_ray

pytestmark = pytest.mark.integration


def test_the_local_ray_answers_state_queries_about_itself(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connect_ray()
    try:
        @ray.remote(num_cpus=0)
        def nodes_seen_from_a_worker() -> list[str]:
            from ray.util.state import list_nodes

            return [n.node_id for n in list_nodes(timeout=20)]

        assert ray.get(nodes_seen_from_a_worker.remote(), timeout=120) == [ray.get_runtime_context().get_node_id()]
    finally:
        ray.shutdown()


def test_a_dashboard_that_cannot_start_costs_a_warning_not_the_run(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as taken:  # the port free_port chose is taken before Ray binds it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(connect, "free_port", lambda: taken.getsockname()[1])
        with pytest.warns(UserWarning, match="dashboard did not start"):
            connect_ray()
    try:
        assert ray.get(ray.remote(lambda: 6 * 7).remote(), timeout=120) == 42
    finally:
        ray.shutdown()
