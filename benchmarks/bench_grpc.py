"""Latency of the job service as clients see it: CreateJob(validate_only) with 32 concurrent clients, GetJob
with the same, and (optionally) how long training events take from happening to reaching a WatchJob client.

Run: python benchmarks/bench_grpc.py [--full] [--events]   (prints one JSON object)

The server is `python -m raysft.service serve` in its own process (so the load generator does not share
its interpreter lock) with a SQLite file store and token auth on; 32 client threads each hold their own
channel and send requests back to back after a shared start. CreateJob sends a typical spec (LoRA on a
local model, two data files, eval and checkpoint settings) with validate_only, so it runs the full
validation, path confinement and advisories but stores nothing; GetJob reads one stored job. Latencies
are per call, in milliseconds; `*_one_client_p50_ms` is the same call with no concurrency (the cost of
one call). On a 2-core machine the 32 clients and the server share the cores, so the concurrent
latencies are mostly queueing (latency ≈ clients / throughput). `--events` also runs a tiny 3-step training job on the server's embedded
Ray and reports event latency: arrival at the watcher minus the event's own `time` (same clock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raysft.local_ray import free_port
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord, NewEvent, Store
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]
_TOKEN = "bench-token"
_AUTH = (("authorization", f"Bearer {_TOKEN}"),)


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return round(pick(0.50) * 1e3, 2), round(pick(0.99) * 1e3, 2)


def _start_server(root: Path, ray_address: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (root / "token").write_text(_TOKEN)
    cmd = [sys.executable, "-m", "raysft.service", "serve", "--port", str(port), "--db", f"sqlite:///{root}/jobs.db",
           "--allowed-root", str(root), "--allowed-root", str(_REPO / "examples/data"), "--token-file", str(root / "token")]
    if ray_address:
        cmd += ["--ray-address", ray_address]
    proc = subprocess.Popen(cmd, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, cwd=root)
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        health, deadline = health_pb2_grpc.HealthStub(channel), time.time() + 240
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return proc, address
            except grpc.RpcError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((root / "server.log").read_text()[-3000:])
            time.sleep(0.3)


def _hammer(address: str, clients: int, calls: int, make_call) -> list[float]:
    """Latencies of `clients` threads each making `calls` calls (after 3 warm-up calls each)."""
    latencies: list[float] = []
    lock, start = threading.Lock(), threading.Barrier(clients)

    def client():
        with grpc.insecure_channel(address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            for _ in range(3):
                make_call(stub)
            start.wait()
            mine = []
            for _ in range(calls):
                t = time.perf_counter()
                make_call(stub)
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _rpc_latency(quick: bool, clients: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model").mkdir()
        for name in ("train.jsonl", "extra.jsonl"):
            (root / name).write_text("{}\n")
        store = Store(f"sqlite:///{root}/jobs.db")
        store.create_job(JobRecord(id="bench-1", kind="train", spec={"model": {"name_or_path": "model"}, "data": {"train": [
            {"path": str(root / "train.jsonl")}]}}, state=JobState.RUNNING), [NewEvent("info", "state_changed", "→ RUNNING")])
        store.close()
        proc, address = _start_server(root, "http://127.0.0.1:1")  # no Ray needed: nothing here reaches it
        try:
            spec = spec_to_proto({
                "model": {"name_or_path": "model", "lora": {"rank": 16, "alpha": 32, "target_modules": "all-linear"}},
                "data": {"train": ["train.jsonl", {"path": "extra.jsonl", "weight": 0.5}], "validation_split": 0.1,
                         "max_seq_len": 1024},
                "train": {"epochs": 3, "learning_rate": 2e-4, "micro_batch_size": 4, "global_batch_size": 16},
                "eval": {"every_steps": 50}, "checkpoint": {"every_steps": 50, "keep_last": 3}})
            create = jobs_pb2.CreateJobRequest(spec=spec, validate_only=True, labels={"team": "bench"})
            get = jobs_pb2.GetJobRequest(job_id="bench-1")
            calls = 25 if quick else 200
            started = time.perf_counter()
            create_lat = _hammer(address, clients, calls, lambda stub: stub.CreateJob(create, metadata=_AUTH))
            create_s = time.perf_counter() - started
            started = time.perf_counter()
            get_lat = _hammer(address, clients, calls, lambda stub: stub.GetJob(get, metadata=_AUTH))
            get_s = time.perf_counter() - started
            alone = {name: _percentiles(_hammer(address, 1, calls * 4, call))[0] for name, call in (
                ("create", lambda stub: stub.CreateJob(create, metadata=_AUTH)), ("get", lambda stub: stub.GetJob(get, metadata=_AUTH)))}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    c50, c99 = _percentiles(create_lat)
    g50, g99 = _percentiles(get_lat)
    return {"clients": clients, "calls_per_client": calls, "create_job_p50_ms": c50, "create_job_p99_ms": c99,
            "create_job_per_s": round(len(create_lat) / create_s, 1), "get_job_p50_ms": g50, "get_job_p99_ms": g99,
            "get_job_per_s": round(len(get_lat) / get_s, 1),
            "create_job_one_client_p50_ms": alone["create"], "get_job_one_client_p50_ms": alone["get"]}


def _event_latency() -> dict:
    from raysft.model.tiny import init_tiny
    from raysft.service.client import JobClient

    data = str(_REPO / "examples/data/tickets_train.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = init_tiny(root / "base", data, vocab_size=300, hidden_size=32, layers=1)
        proc, address = _start_server(root, None)  # the embedded Ray cluster
        try:
            with JobClient(address, token=_TOKEN) as client:
                job = client.create_job({"model": {"name_or_path": str(base)}, "data": {"train": [data], "validation_split": 0.1,
                                         "max_seq_len": 128}, "train": {"max_steps": 3, "micro_batch_size": 2, "global_batch_size": 2},
                                         "checkpoint": {"every_steps": 1, "keep_last": 2}})
                lags = [time.time() - e.time.ToNanoseconds() / 1e9 for e in client.watch(job.id)
                        if e.type not in ("state_changed", "warning")]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    p50, _ = _percentiles(lags)
    return {"event_latency_p50_ms": p50, "event_latency_max_ms": round(max(lags) * 1e3, 2), "events_measured": len(lags)}


def run(quick: bool = True, events: bool = False, clients: int = 32) -> dict:
    """Measure and return the latencies (milliseconds).

    Args:
        quick: 25 calls per client instead of 200.
        events: also run a tiny training job on an embedded Ray (about a minute) for event latency.
        clients: concurrent clients.

    Returns:
        {create_job_p50_ms, create_job_p99_ms, get_job_p50_ms, get_job_p99_ms, ...} and, with events,
        {event_latency_p50_ms, event_latency_max_ms, events_measured}.
    """
    result = {"cpu_count": os.cpu_count(), **_rpc_latency(quick, clients)}
    if events:
        result.update(_event_latency())
    return result


if __name__ == "__main__":
    print(json.dumps(run(quick="--full" not in sys.argv, events="--events" in sys.argv)))
