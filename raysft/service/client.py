"""`JobClient`: a small Python client of the raysft job service, for other services and the `raysft jobs` CLI.

    from raysft.service.client import JobClient

    with JobClient("127.0.0.1:50051", token="...") as jobs:
        job = jobs.create_job("spec.yaml", overrides=["train.epochs=2"], request_id="ticket-router-v3")
        for event in jobs.watch(job.id):
            print(event.type, event.message)
        print(jobs.get_job(job.id).state)

Specs are validated locally first (the same messages as `raysft train`), then only the keys the spec sets
travel; the server fills in the defaults and validates again. RPC failures raise `JobServiceError`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import uuid
from pathlib import Path
from typing import Iterator, Optional, Union

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from raysft.config import JobSpec, load_spec
from raysft.service.api.specproto import spec_to_proto
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc

__all__ = ["JobClient", "JobServiceError", "TERMINAL_STATES", "DEFAULT_SERVER", "is_loopback", "content_request_id",
           "spec_message"]

DEFAULT_SERVER = "127.0.0.1:50051"
TERMINAL_STATES = frozenset({jobs_pb2.SUCCEEDED, jobs_pb2.FAILED, jobs_pb2.CANCELLED})
_KINDS = {None: jobs_pb2.JOB_KIND_UNSPECIFIED, "train": jobs_pb2.TRAIN, "tune": jobs_pb2.TUNE}


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 in brackets or not) is this machine's loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def spec_message(spec: Union[str, Path, dict, JobSpec, jobs_pb2.JobSpec], overrides: tuple[str, ...] = ()) -> jobs_pb2.JobSpec:
    """The raysft.v1.JobSpec a create sends: a file or mapping (with `key=value` overrides) or a JobSpec, validated
    here first, with only the keys it sets; a message as it is.

    Raises:
        raysft.config.SpecError: the spec is invalid.
    """
    if isinstance(spec, jobs_pb2.JobSpec):
        return spec
    parsed = spec if isinstance(spec, JobSpec) else load_spec(spec, list(overrides))
    return spec_to_proto(parsed.model_dump(mode="json", exclude_unset=True))


def content_request_id(spec: jobs_pb2.JobSpec, kind: Optional[str], labels: dict[str, str], max_attempts: int = 1,
                       notify_urls: tuple[str, ...] = (), priority: Optional[int] = None) -> str:
    """An idempotency key derived from what a CreateJob asks for (spec, kind, labels, max_attempts, notify_urls,
    priority): the same job sent twice, a retry after a timeout above all, is stored once."""
    body = jobs_pb2.CreateJobRequest(spec=spec, kind=_KINDS[kind], labels=labels, max_attempts=_attempts(max_attempts),
                                     notify_urls=notify_urls)
    if priority is not None and priority != 5:  # the default, unset: requests from before the field hash the same
        body.priority = priority
    return "sha256:" + hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()[:48]


def _attempts(max_attempts: int) -> int:
    """max_attempts as sent: 1 (the default) as 0, so requests from before the field hash the same."""
    return 0 if max_attempts == 1 else max_attempts


class JobServiceError(Exception):
    """An RPC failed: `code` (a grpc.StatusCode), the server's `message`, and `violations`, a list of
    (dotted field path, what is wrong) for INVALID_ARGUMENT."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: list[tuple[str, str]]):
        self.code, self.message, self.violations = code, message, violations
        lines = [f"{code.name}: {message}"] + [f"  {field}: {text}" for field, text in violations]
        super().__init__("\n".join(lines))

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "JobServiceError":
        """Unpack a grpc.RpcError, BadRequest field violations included."""
        violations = []
        status = rpc_status.from_call(error)
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations += [(v.field, v.description) for v in bad.field_violations]
        return cls(error.code(), error.details() or "", violations)


class JobClient:
    """A connection to a raysft job server.

    Args:
        server: host:port (default: RAYSFT_SERVER, else 127.0.0.1:50051).
        token: bearer token (default: RAYSFT_TOKEN).
        tls_ca: PEM file of the CA that signed the server's certificate; switches to TLS. `tls=True` uses
            the system roots.
        timeout_s: deadline of unary calls (streams have none).
        allow_plaintext_token: send the token without TLS to a server that is not on loopback (anyone on the
            path can read it); refused otherwise.

    Raises:
        ValueError: a token that a header cannot carry, or one that would travel in plaintext off this machine.
    """

    def __init__(self, server: Optional[str] = None, *, token: Optional[str] = None, tls_ca: Optional[str] = None,
                 tls: bool = False, timeout_s: float = 30.0, allow_plaintext_token: bool = False):
        self.server = server or os.environ.get("RAYSFT_SERVER") or DEFAULT_SERVER
        token = (token if token is not None else os.environ.get("RAYSFT_TOKEN") or "").strip()
        if token and not token.isprintable():
            raise ValueError("the token holds characters a header cannot carry (a line break?); a token file holds one line")
        host = self.server.split("///")[-1].rpartition(":")[0] or self.server
        if token and not (tls_ca or tls) and not is_loopback(host) and not allow_plaintext_token:
            raise ValueError(f"{self.server} is not this machine and the connection has no TLS: the token would travel "
                             "in plaintext; pass --tls-ca (RAYSFT_TLS_CA), or --allow-plaintext-token on a network you trust")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if tls_ca or tls:
            roots = Path(tls_ca).read_bytes() if tls_ca else None
            self._channel = grpc.secure_channel(self.server, grpc.ssl_channel_credentials(root_certificates=roots))
        else:
            self._channel = grpc.insecure_channel(self.server)
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unary(self, method: str, request):
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise JobServiceError.from_rpc(exc) from None

    def _stream(self, method: str, request) -> Iterator:
        try:
            yield from getattr(self._stub, method)(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise JobServiceError.from_rpc(exc) from None

    # ------------------------------------------------------------------------------------- jobs

    def create_job(self, spec: Union[str, Path, dict, JobSpec, jobs_pb2.JobSpec], *, overrides: tuple[str, ...] = (),
                   kind: Optional[str] = None, request_id: Optional[str] = None, validate_only: bool = False,
                   labels: Optional[dict[str, str]] = None, max_attempts: int = 1,
                   notify_urls: tuple[str, ...] = (), priority: Optional[int] = None) -> jobs_pb2.Job:
        """Submit a job (or only validate it).

        Args:
            spec: a YAML file, a spec mapping, a JobSpec, or a raysft.v1.JobSpec message (sent as is).
            overrides: `key.path=value` changes applied to a file or mapping.
            kind: "train" or "tune"; default: tune when the spec has a tune section.
            request_id: idempotency key; default a new UUID, so pass your own to retry safely (the CLI passes
                `content_request_id`, so the same submission run again returns the job already stored).
            validate_only: check everything, store and run nothing.
            labels: key/value tags to filter ListJobs by.
            max_attempts: attempts in all (1 - 10) when a train job fails for a SYSTEM reason.
            notify_urls: URLs the server POSTs a signed notice of each state change (under the operator's prefixes).
            priority: 0 - 9, higher leaves the server's admission queue first (None: the server's default, 5).

        Raises:
            raysft.config.SpecError: the spec is invalid (checked here before anything is sent).
            JobServiceError: the server refused it.
        """
        message = spec_message(spec, overrides)
        request = jobs_pb2.CreateJobRequest(spec=message, kind=_KINDS[kind], validate_only=validate_only, labels=labels or {},
                                            max_attempts=_attempts(max_attempts), notify_urls=notify_urls,
                                            priority=priority)
        if not validate_only:
            request.request_id = request_id or str(uuid.uuid4())
        return self._unary("CreateJob", request)

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        """The job's current state, progress and outputs."""
        return self._unary("GetJob", jobs_pb2.GetJobRequest(job_id=job_id))

    def list_jobs(self, *, states: tuple[int, ...] = (), labels: Optional[dict[str, str]] = None,
                  page_size: int = 100) -> Iterator[jobs_pb2.Job]:
        """Every job, newest first (pages are fetched as you iterate); filter by jobs_pb2 states and labels."""
        token = ""
        while True:
            page = self._unary("ListJobs", jobs_pb2.ListJobsRequest(states=states, labels=labels or {}, page_size=page_size,
                                                                    page_token=token))
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        """Cancel (idempotent); the job goes CANCELLING, then CANCELLED when Ray has stopped it."""
        return self._unary("CancelJob", jobs_pb2.CancelJobRequest(job_id=job_id))

    def resume_job(self, job_id: str) -> jobs_pb2.Job:
        """Continue a FAILED or CANCELLED job from its latest checkpoint as its next attempt (QUEUED again)."""
        return self._unary("ResumeJob", jobs_pb2.ResumeJobRequest(job_id=job_id))

    def delete_job(self, job_id: str) -> None:
        """Delete a terminal job's record (its output files stay)."""
        self._unary("DeleteJob", jobs_pb2.DeleteJobRequest(job_id=job_id))

    # ----------------------------------------------------------------------------------- events

    def watch(self, job_id: str, after_sequence: int = 0) -> Iterator[jobs_pb2.JobEvent]:
        """Events after `after_sequence`, live, until the job's terminal state event."""
        return self._stream("WatchJob", jobs_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence))

    def events(self, job_id: str, after_sequence: int = 0, page_size: int = 500) -> Iterator[jobs_pb2.JobEvent]:
        """The stored event history (no waiting), page by page."""
        token = ""
        while True:
            page = self._unary("ListJobEvents", jobs_pb2.ListJobEventsRequest(
                job_id=job_id, after_sequence=after_sequence, page_size=page_size, page_token=token))
            yield from page.events
            token = page.next_page_token
            if not token:
                return

    def checkpoints(self, job_id: str) -> list[jobs_pb2.Checkpoint]:
        """The kept checkpoints, newest first; `is_best` marks the best by checkpoint.keep_best_by."""
        return list(self._unary("ListCheckpoints", jobs_pb2.ListCheckpointsRequest(job_id=job_id)).checkpoints)

    def logs(self, job_id: str, *, tail_lines: int = 0, follow: bool = False) -> Iterator[str]:
        """The Ray job's log text: all (or the last `tail_lines` lines), then new text until the end with follow."""
        for chunk in self._stream("GetJobLogs", jobs_pb2.GetJobLogsRequest(job_id=job_id, tail_lines=tail_lines,
                                                                           follow=follow)):
            yield chunk.text

    def wait(self, job_id: str) -> jobs_pb2.Job:
        """Block until the job is terminal (following its events); returns the final job."""
        for _ in self.watch(job_id):
            pass
        return self.get_job(job_id)
