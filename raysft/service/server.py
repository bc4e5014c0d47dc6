"""The job server: store, Ray runner, supervisor and the gRPC server with health checking and reflection.

`create_server("127.0.0.1:0", ...)` starts everything and returns a `RunningServer` with the bound port
(tests use port 0); `serve(...)` runs until SIGTERM or SIGINT (SIGHUP reloads the tenants file) and shuts
down gracefully: health turns NOT_SERVING, in-flight RPCs get a grace period, the supervisor stops following
(jobs on an external cluster keep running and are re-attached by the next server), then the embedded Ray
cluster, if any, stops.

The gRPC server is grpc.aio on an event loop of its own thread, with `max_workers` threads for the calls
that block (see servicer.py). Measured against the thread-per-call server it replaced (benchmarks/README.md):
with 32 clients on 2 cores each call paid for hand-offs between grpc's polling thread and the worker threads
under one interpreter lock, which cost more than the handlers themselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from raysft.service.client import is_loopback
from raysft.service.jobs.admission import Admission
from raysft.local_ray.cluster import LocalRayCluster
from raysft.service.jobs.auth import Authenticator
from raysft.service.api.interceptors import AuthInterceptor, ErrorInterceptor
from raysft.service.operations import Jobs
from raysft.service.jobs.leader import Leadership
from raysft.service.jobs.limits import Limits
from raysft.service.api.metrics import MetricsInterceptor, ServiceMetrics
from raysft.service.jobs.paths import PathPolicy
from raysft.service.ray.runner import RayJobsRunner
from raysft.service.api.servicer import JobServicer
from raysft.service.jobs.store import Store
from raysft.service.ray.supervisor import Supervisor
from raysft.service.jobs.tenants import Tenants
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc
from raysft.service.jobs.webhooks import WebhookPolicy, WebhookSender

__all__ = ["create_server", "serve", "RunningServer", "SERVICE_NAME", "LEADER_HEALTH", "is_loopback"]


log = logging.getLogger(__name__)

SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name  # raysft.v1.JobService
# The health service name SERVING on the leader of the servers sharing a store, NOT_SERVING on a standby (both
# serve SERVICE_NAME): a check that tells an operator, or a test, which one runs the job followers.
LEADER_HEALTH = "raysft.v1.Leader"


class _LoopThread:
    """An asyncio event loop running on a thread of its own, with `max_workers` threads for blocking calls."""

    def __init__(self, max_workers: int):
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"))
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: Optional[float] = None):
        """Run `coro` on the loop and return its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@dataclass
class RunningServer:
    """A started server: `port` is the bound port, `address` host:port."""

    port: int
    address: str
    jobs: Jobs
    store: Store
    supervisor: Supervisor
    ray_address: str
    _grpc: grpc.aio.Server
    _health: health.aio.HealthServicer
    _loop: _LoopThread
    _cluster: Optional[LocalRayCluster]
    metrics: Optional[ServiceMetrics] = None
    tenants: Optional[Tenants] = None  # reload() on SIGHUP
    http_port: Optional[int] = None
    _http: Optional[object] = None
    webhook_sender: Optional[WebhookSender] = None
    _leadership: Optional[Leadership] = None
    _stopped: bool = False

    @property
    def is_leader(self) -> bool:
        """Whether this server runs the supervisor (the other servers sharing its store are standbys)."""
        return self._leadership is not None and self._leadership.is_leader

    def stop(self, grace_s: float = 5.0) -> None:
        """Graceful shutdown (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._loop.run(self._health.enter_graceful_shutdown())
        if self._http is not None:
            self._loop.run(self._http.stop())
        self._loop.run(self._grpc.stop(grace_s))
        if self._leadership is not None:
            self._leadership.stop()  # the followers stop before the lock is let go: a standby takes over then
        self.supervisor.stop()
        if self.webhook_sender is not None:
            self.webhook_sender.stop()  # POSTs under way finish; the rest wait in the store for the next server
        self._loop.close()  # waits for streams still in threads: each sees its end within a second
        self.store.close()
        log.info("gRPC server and job followers stopped")
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

    def wait(self) -> None:
        """Block until the gRPC server stops."""
        self._loop.run(self._grpc.wait_for_termination())


def create_server(address: str = "127.0.0.1:0", *, db_url: str = "sqlite:///raysft-jobs.db", token: Optional[str] = None,
                  tls_cert: Optional[str] = None, tls_key: Optional[str] = None, ray_address: Optional[str] = None,
                  allowed_roots: Optional[list[str]] = None, jobs_root: Optional[str] = None,
                  allowed_storage: tuple[str, ...] = (), limits: Optional[Limits] = None,
                  allow_remote_code: bool = False, max_workers: int = 64, max_streams_per_client: int = 64,
                  poll_s: float = 0.5, ray_deadline_s: float = 600.0, http_port: Optional[int] = None,
                  webhooks: Optional[WebhookPolicy] = None, webhook_backoff_s: float = 10.0,
                  tenants: Optional[str | Path] = None) -> RunningServer:
    """Start a job server on `address` (host:port; port 0 picks a free one).

    Args:
        db_url: SQLAlchemy URL of the job store. Several servers may share one (PostgreSQL, or a SQLite file on one
            host): all answer RPCs, one at a time (the leader, raysft.service.jobs.leader) follows the jobs.
        token: the server's bearer token (its holder is an admin: every tenant's jobs); off loopback this or
            `tenants` is required.
        tls_cert, tls_key: PEM files; with both, the port speaks TLS.
        ray_address: the Ray dashboard URL of the cluster to run jobs on; None starts an embedded local cluster.
            RAY_ADDRESS / RAY_API_SERVER_ADDRESS in the environment win over it inside Ray's job SDK
            (`raysft serve` clears them).
        allowed_roots: directories spec paths must lie under (default: the working directory).
        jobs_root: where jobs without an output_dir write (<jobs_root>/<job id>); default <first root>/runs.
        allowed_storage: remote URI prefixes (s3://bucket/prefix) spec URIs may point under; none by default.
        limits: caps on workers, resources per worker, trials, active and running jobs, and what job drivers reserve.
        allow_remote_code: accept specs with model.trust_remote_code.
        max_workers: threads for calls that block (streams hold none while they wait).
        max_streams_per_client: open WatchJob / GetJobLogs streams one client address may hold (RESOURCE_EXHAUSTED beyond).
        poll_s: seconds between Ray status polls per job.
        ray_deadline_s: how long Ray may stay unreachable before a running job fails (a SYSTEM failure: retried
            when the job has attempts left).
        http_port: also serve the HTTP/JSON API, the web console and /metrics on this port of the same host
            (0 picks one: RunningServer.http_port), with the same store, token and TLS.
        webhooks: the URLs told of state changes, the prefixes jobs' notify_urls must lie under, and the secret
            that signs each POST; with a secret, this server sends the store's pending deliveries.
        webhook_backoff_s: wait before a failed delivery's first retry; it doubles after each failure.
        tenants: the tenants file (raysft.service.jobs.tenants): its tokens, tenants, roles, roots and quotas.

    Raises:
        ValueError: a non-loopback address without a token, only one of cert / key, a bad storage prefix, or a
            tenants file that cannot be used (TenantsError).
    """
    host = address.rpartition(":")[0]
    _refuse_unsafe_binding(address, host, token, tenants, tls_cert, tls_key)
    paths = _path_policy(allowed_roots, jobs_root, allowed_storage)
    members = Tenants(tenants) if tenants is not None else None
    authenticator = Authenticator(token, members)
    core = _start_core(db_url, paths, limits or Limits(), members, webhooks or WebhookPolicy(),
                       webhook_backoff_s=webhook_backoff_s, ray_address=ray_address, poll_s=poll_s,
                       ray_deadline_s=ray_deadline_s, allow_remote_code=allow_remote_code)
    loop = _LoopThread(max_workers)
    try:
        grpc_server, bound, health_servicer, http = _start_apis(
            loop, address, http_port, core.jobs, authenticator, core.metrics, max_streams_per_client, tls_cert, tls_key)
    except BaseException:
        loop.close()
        core.close()
        raise
    leadership = core.start_background(db_url, lambda leader: _set_leader_health(loop, health_servicer, leader))
    return RunningServer(bound, f"{host}:{bound}", core.jobs, core.store, core.supervisor, core.ray_address, grpc_server,
                         health_servicer, loop, core.cluster, core.metrics, members, http.port if http else None, http,
                         core.sender, leadership)


def _refuse_unsafe_binding(address: str, host: str, token: Optional[str], tenants, tls_cert: Optional[str],
                           tls_key: Optional[str]) -> None:
    """Refuse options that would leave the port open: off loopback without credentials, or half a TLS pair."""
    if not is_loopback(host) and not token and tenants is None:
        raise ValueError(f"binding {address} exposes the service beyond this machine; pass --token-file (and "
                         "--tls-cert/--tls-key), or bind 127.0.0.1")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")


def _path_policy(allowed_roots: Optional[list[str]], jobs_root: Optional[str],
                 allowed_storage: tuple[str, ...]) -> PathPolicy:
    """The server-wide path policy: `allowed_roots` default to the working directory, jobs to <first root>/runs."""
    roots = [str(Path(r).resolve()) for r in (allowed_roots or [os.getcwd()])]
    return PathPolicy(roots, Path(jobs_root or Path(roots[0]) / "runs").resolve(), tuple(allowed_storage))


@dataclass
class _Core:
    """What lies behind the APIs: the store and everything that follows, admits and notifies about its jobs."""

    store: Store
    metrics: ServiceMetrics
    cluster: Optional[LocalRayCluster]  # the embedded Ray cluster, when no ray_address was given
    ray_address: str
    supervisor: Supervisor
    jobs: Jobs
    sender: Optional[WebhookSender]

    def start_background(self, db_url: str, on_leader_change) -> Leadership:
        """Start the work that runs once the APIs serve: webhook deliveries, and the election for the supervisor."""
        if self.sender is not None:
            # Deliveries left by an earlier server go out too (claimed: two servers never send one twice).
            self.sender.start()
        # The leader reconciles (follows every job the store still lists as active) and admits queued jobs; a standby
        # waits to take over.
        leadership = Leadership(db_url, on_acquire=self.supervisor.start, on_lose=self.supervisor.stop)
        leadership.on_change(on_leader_change)
        leadership.start()
        return leadership

    def close(self) -> None:
        """Undo a start whose APIs failed to come up (a running server stops through RunningServer.stop)."""
        self.supervisor.stop()
        self.store.close()
        if self.cluster is not None:
            self.cluster.stop()


def _start_core(db_url: str, paths: PathPolicy, limits: Limits, members: Optional[Tenants], webhooks: WebhookPolicy, *,
                webhook_backoff_s: float, ray_address: Optional[str], poll_s: float, ray_deadline_s: float,
                allow_remote_code: bool) -> _Core:
    """Open the store and build the domain on it, starting an embedded Ray cluster when `ray_address` is None."""
    store = Store(db_url, webhooks=webhooks.urls)
    metrics = ServiceMetrics(store)
    store.observe(metrics.observe_store_change)
    cluster = None
    if ray_address is None:
        cluster = LocalRayCluster(paths.jobs_root / ".ray-cluster.json")
        ray_address = cluster.start()
    runner = RayJobsRunner(ray_address, driver_cpus=limits.driver_cpus, driver_memory_bytes=limits.driver_memory_bytes)
    admission = Admission(limits.max_running_jobs, members.quota if members else None)
    supervisor = Supervisor(store, runner, poll_s=poll_s, ray_deadline_s=ray_deadline_s,
                            on_event_lag=metrics.observe_event_lag, admission=admission)
    jobs = Jobs(store, runner, supervisor, paths, allow_remote_code=allow_remote_code, limits=limits, webhooks=webhooks,
                tenants=members)
    sender = WebhookSender(store, webhooks.secret, backoff_base_s=webhook_backoff_s) if webhooks.enabled else None
    if sender is not None:
        def wake_on_state_change(_job, events) -> None:
            if any(e.type == "state_changed" for e in events):
                sender.wake()  # its outbox rows are committed: send them now, not at the next poll

        store.observe(wake_on_state_change)
    return _Core(store, metrics, cluster, ray_address, supervisor, jobs, sender)


def _start_apis(loop: _LoopThread, address: str, http_port: Optional[int], jobs: Jobs, authenticator: Authenticator,
                metrics: ServiceMetrics, max_streams_per_client: int, tls_cert: Optional[str], tls_key: Optional[str]):
    """Start the gRPC server, and the HTTP one when `http_port` is set, on `loop`.

    Returns:
        (grpc server, its bound port, its health servicer, the HttpServer or None).
    """
    server, bound, health_servicer = loop.run(_start_grpc(
        address, JobServicer(jobs, max_streams_per_client=max_streams_per_client), authenticator, metrics, tls_cert, tls_key))
    http = None
    if http_port is not None:
        from raysft.service.api.http import HttpServer, create_app  # the [http] extra

        http = HttpServer(create_app(jobs, authenticator, metrics, max_streams_per_client=max_streams_per_client),
                          address.rpartition(":")[0], http_port, tls_cert=tls_cert, tls_key=tls_key)
        try:
            loop.run(http.start())
        except BaseException:
            loop.run(http.stop())
            raise
    return server, bound, health_servicer, http


def _set_leader_health(loop: _LoopThread, health_servicer: health.aio.HealthServicer, leader: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if leader else health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        loop.run(health_servicer.set(LEADER_HEALTH, status), timeout=5)
    except Exception as exc:  # shutting down: nobody asks any more
        log.debug("leader health not updated: %s", exc)


async def _start_grpc(address: str, servicer: JobServicer, authenticator: Authenticator, metrics: ServiceMetrics,
                      tls_cert: Optional[str], tls_key: Optional[str]) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build, bind and start the grpc.aio server on the running loop; returns it, its port and its health servicer."""
    # Auth even without a token: it hands each call its caller (ANONYMOUS then), which Jobs needs.
    interceptors = [MetricsInterceptor(metrics), AuthInterceptor(authenticator), ErrorInterceptor()]
    server = grpc.aio.server(interceptors=interceptors)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if tls_cert:
        credentials = grpc.ssl_server_credentials([(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health_servicer


def serve(address: str, **kwargs) -> int:
    """Run a server until SIGTERM / SIGINT, then shut down gracefully; returns 0.

    Args:
        address: host:port to bind.
        **kwargs: as for `create_server`.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    running = create_server(address, **kwargs)
    if running.tenants is not None:
        signal.signal(signal.SIGHUP, lambda *_: running.tenants.reload())
    role = "the leader" if running.is_leader else "a standby (another server sharing the store leads)"
    print(f"raysft job service on {running.address} (Ray at {running.ray_address}, store {running.store.url}; {role})",
          flush=True)
    if running.http_port is not None:
        host = running.address.rpartition(":")[0]
        print(f"HTTP API, web console and /metrics on http://{host}:{running.http_port}/", flush=True)
    while not stop.wait(1.0):  # a timed wait lets the signal handler run promptly
        pass
    print("shutting down: finishing in-flight calls", flush=True)
    running.stop()
    return 0
