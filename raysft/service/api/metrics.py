"""Prometheus metrics of the job service, on a registry of its own (`GET /metrics` on the HTTP port).

    raysft_jobs{state}                         jobs in the store by state (read from the store at each scrape)
    raysft_queue_length                        jobs QUEUED (the same read: right whoever admits jobs)
    raysft_jobs_created_total                  jobs stored by this process
    raysft_job_duration_seconds{state}         creation to end, observed when a job ends, by final state
    raysft_rpc_duration_seconds{method,code}   calls: gRPC ("/raysft.v1.JobService/GetJob", "OK") and HTTP
                                               ("GET /v1/jobs/{job_id}", "200"); a stream counts until it closes
    raysft_event_lag_seconds                   a training event's time on the worker to its storing

Gauges come from the store, so a restarted server (or one of several sharing PostgreSQL) reports every job;
counters and histograms count what this process saw.
"""

from __future__ import annotations

import inspect
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from raysft.service.api.interceptors import WrappingInterceptor
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import EventRecord, JobRecord, Store

__all__ = ["ServiceMetrics", "MetricsInterceptor"]

_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, float("inf"))
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, float("inf"))


class _StoreGauges(Collector):
    """raysft_jobs{state} and raysft_queue_length, counted by the store at scrape time (one grouped query)."""

    def __init__(self, store: Store):
        self._store = store

    def collect(self):
        counts = self._store.state_counts()
        jobs = GaugeMetricFamily("raysft_jobs", "Jobs in the store by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("raysft_queue_length", "Jobs waiting to start (QUEUED).", value=counts.get(JobState.QUEUED, 0))


class ServiceMetrics:
    """The service's metrics; `registry` is what `/metrics` exposes.

    Wiring: `observe_store_change` is a store observer (creations, ends), `event_lag` receives lags from the
    supervisor, `rpc` is timed by MetricsInterceptor (gRPC) and the HTTP middleware.
    """

    def __init__(self, store: Store):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StoreGauges(store))
        self.created = Counter("raysft_jobs_created", "Jobs stored by this server process.", registry=self.registry)
        self.duration = Histogram("raysft_job_duration_seconds", "Seconds from a job's creation to its end, by final state.",
                                  ["state"], buckets=_DURATION_BUCKETS, registry=self.registry)
        self.rpc = Histogram("raysft_rpc_duration_seconds", "Seconds per call (gRPC and HTTP) by method and status code.",
                             ["method", "code"], registry=self.registry)
        self.event_lag = Histogram("raysft_event_lag_seconds", "Seconds from a training event's time on the worker "
                                   "to its storing.", buckets=_LAG_BUCKETS, registry=self.registry)

    def observe_store_change(self, job: JobRecord, events: list[EventRecord]) -> None:
        """Count creations and ends among a change's state_changed events."""
        for e in events:
            if e.type != "state_changed":
                continue
            if not e.data.get("from"):
                self.created.inc()
            to = e.data.get("to")
            if to in _TERMINAL and job.ended_at:
                self.duration.labels(to).observe(max(0.0, job.ended_at - job.created_at))

    def observe_event_lag(self, lag_s: float) -> None:
        self.event_lag.observe(max(0.0, lag_s))


_TERMINAL = {s.value for s in JobState if s.terminal}


class MetricsInterceptor(WrappingInterceptor):
    """Times every gRPC call into raysft_rpc_duration_seconds{method, code}; the outermost interceptor, so refused
    calls (UNAUTHENTICATED) and mapped errors count with their codes."""

    def __init__(self, metrics: ServiceMetrics):
        super().__init__()
        self._rpc = metrics.rpc

    def wrap(self, behaviour: Callable, method: str, streams: bool) -> Callable:
        rpc = self._rpc

        def record(start: float, context, failed: bool) -> None:
            code = context.code()
            name = getattr(code, "name", None) or ("UNKNOWN" if failed else "OK")
            rpc.labels(method, name).observe(time.perf_counter() - start)

        if not streams or not inspect.isasyncgenfunction(behaviour):  # health Watch writes to the context
            async def call(request, context):
                start, failed = time.perf_counter(), True
                try:
                    response = await behaviour(request, context)
                    failed = False
                    return response
                finally:
                    record(start, context, failed)
            return call

        async def call_stream(request, context):
            start, failed = time.perf_counter(), True
            try:
                async for response in behaviour(request, context):
                    yield response
                failed = False
            finally:
                record(start, context, failed)
        return call_stream
