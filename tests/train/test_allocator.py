"""Which allocator a run's Ray Train workers get (the workers themselves: test_train_integration.py)."""

from __future__ import annotations

import pytest

from raysft.train.allocator import ENV, cpu_allocator, worker_runtime_env


def test_cpu_workers_preload_jemalloc_ahead_of_the_nodes_own_preload(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    env = worker_runtime_env(use_gpu=False)["env_vars"]
    first, rest = env["LD_PRELOAD"].split(":", 1)
    assert first.endswith("/ray/core/libjemalloc.so") and rest == "${LD_PRELOAD}"  # Ray expands it on the node
    assert env["MALLOC_CONF"] == "thp:always,metadata_thp:always"


def test_a_launching_malloc_conf_replaces_raysfts_and_gpu_or_system_runs_keep_glibc(monkeypatch):
    monkeypatch.setenv("MALLOC_CONF", "narenas:1")
    assert worker_runtime_env(use_gpu=False)["env_vars"]["MALLOC_CONF"] == "narenas:1"
    assert worker_runtime_env(use_gpu=True) == {}
    monkeypatch.setenv(ENV, "system")
    assert worker_runtime_env(use_gpu=False) == {}


def test_an_unknown_allocator_names_the_variable_and_its_choices(monkeypatch):
    monkeypatch.setenv(ENV, "tcmalloc")
    with pytest.raises(ValueError, match=r"RAYSFT_CPU_ALLOCATOR='tcmalloc' is not one of \['jemalloc', 'system'\]"):
        cpu_allocator()
