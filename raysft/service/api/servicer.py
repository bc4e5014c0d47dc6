"""`raysft.v1.JobService`: translates messages to `Jobs` calls and back, nothing more.

The server runs on grpc.aio: one event loop serves every call. Single-row reads run on the loop itself (well
under a millisecond; a hop to a thread and back costs more than the work); spec validation (its cost grows with
the spec, bounded by raysft.service.api.speclimits), everything that reaches Ray, writes, or pages through many rows runs in
the loop's thread pool. Streams wait on the loop, holding no thread, and each client (by its address) may hold at
most `max_streams_per_client` of them. Each call hands its caller (`caller()`, set by the auth interceptor) to
`Jobs`, which decides what that caller sees and may do. Errors are raised as raysft.service.jobs.errors exceptions; the error
interceptor turns them into status codes with details.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import AsyncIterator, Iterator

from google.protobuf import empty_pb2

from raysft.config import SpecError, Violation
from raysft.service.jobs.auth import Principal
from raysft.service.jobs.admission import DEFAULT_PRIORITY
from raysft.service.jobs.errors import InvalidArgument
from raysft.service.api.interceptors import caller
from raysft.service.operations import Jobs
from raysft.service.api.messages import checkpoint_message, degraded_job_message, event_message, job_message, state_from_message
from raysft.service.api.specproto import spec_from_proto
from raysft.service.jobs.store import JobRecord
from raysft.service.api.streams import StreamSlots
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc

__all__ = ["JobServicer", "create_job"]

log = logging.getLogger(__name__)

_KIND_NAMES = {jobs_pb2.JOB_KIND_UNSPECIFIED: None, jobs_pb2.TRAIN: "train", jobs_pb2.TUNE: "tune"}
_PAGE_BYTES = 3 << 20  # a ListJobs page stops before this: grpc clients refuse messages over 4 MB by default


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """The gRPC face of `Jobs`.

    Args:
        max_streams_per_client: open WatchJob / GetJobLogs streams one client address may hold.
    """

    def __init__(self, jobs: Jobs, *, max_streams_per_client: int = 64):
        self.jobs = jobs
        self.max_streams_per_client = max_streams_per_client
        self._streams = StreamSlots(max_streams_per_client, what="open WatchJob / GetJobLogs streams",
                                    hint="close some (or use ListJobEvents to page through history)")

    @contextlib.contextmanager
    def _stream_slot(self, context) -> Iterator[None]:
        with self._streams.hold(_client_of(context.peer())):
            yield

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context) -> jobs_pb2.Job:
        # Off the loop: converting and validating a spec costs in proportion to its size.
        return await asyncio.to_thread(create_job, self.jobs, request, caller())

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context) -> jobs_pb2.Job:
        return job_message(self.jobs.get(request.job_id, who=caller()))

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context) -> jobs_pb2.ListJobsResponse:
        states = []
        for i, number in enumerate(request.states):
            try:
                states.append(state_from_message(number))
            except ValueError:
                raise InvalidArgument([Violation(f"states.{i}", f"unknown state {number}; use QUEUED, STARTING, RUNNING, "
                                                                "CANCELLING, SUCCEEDED, FAILED or CANCELLED")]) from None
        if request.view not in (jobs_pb2.JOB_VIEW_UNSPECIFIED, jobs_pb2.JOB_VIEW_BASIC, jobs_pb2.JOB_VIEW_FULL):
            raise InvalidArgument([Violation("view", f"unknown view {request.view}; use BASIC or FULL")])
        full = request.view == jobs_pb2.JOB_VIEW_FULL
        jobs, token = await asyncio.to_thread(
            self.jobs.list, who=caller(), states=tuple(states), labels=dict(request.labels), page_size=request.page_size,
            page_token=request.page_token)
        return await asyncio.to_thread(self._page, jobs, token, full)

    def _page(self, jobs: list[JobRecord], token: str, full: bool) -> jobs_pb2.ListJobsResponse:
        """The response for one page; it ends early (its token pointing after the last job sent) at _PAGE_BYTES."""
        page = jobs_pb2.ListJobsResponse(next_page_token=token)
        for i, job in enumerate(jobs):
            message = _listed(job, full)
            if i and page.ByteSize() + message.ByteSize() > _PAGE_BYTES:
                page.next_page_token = self.jobs.page_token_after(jobs[i - 1])
                break
            page.jobs.append(message)
        return page

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context) -> jobs_pb2.Job:
        return job_message(await asyncio.to_thread(self.jobs.cancel, request.job_id, who=caller()))

    async def ResumeJob(self, request: jobs_pb2.ResumeJobRequest, context) -> jobs_pb2.Job:
        return job_message(await asyncio.to_thread(self.jobs.resume, request.job_id, who=caller()))

    async def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context) -> empty_pb2.Empty:
        await asyncio.to_thread(self.jobs.delete, request.job_id, who=caller())
        return empty_pb2.Empty()

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context) -> AsyncIterator[jobs_pb2.JobEvent]:
        with self._stream_slot(context):
            async for event in self.jobs.watch(request.job_id, request.after_sequence, who=caller()):
                yield event_message(event)

    async def ListJobEvents(self, request: jobs_pb2.ListJobEventsRequest, context) -> jobs_pb2.ListJobEventsResponse:
        events, token = await asyncio.to_thread(
            self.jobs.events, request.job_id, who=caller(), after=request.after_sequence, page_size=request.page_size,
            page_token=request.page_token)
        return jobs_pb2.ListJobEventsResponse(events=[event_message(e) for e in events], next_page_token=token)

    async def ListCheckpoints(self, request: jobs_pb2.ListCheckpointsRequest, context) -> jobs_pb2.ListCheckpointsResponse:
        kept, best = self.jobs.checkpoints(request.job_id, who=caller())
        return jobs_pb2.ListCheckpointsResponse(checkpoints=[checkpoint_message(c, c.step == best) for c in kept])

    async def GetJobLogs(self, request: jobs_pb2.GetJobLogsRequest, context) -> AsyncIterator[jobs_pb2.LogChunk]:
        with self._stream_slot(context):
            async for text in self.jobs.logs(request.job_id, who=caller(), tail_lines=request.tail_lines, follow=request.follow):
                yield jobs_pb2.LogChunk(text=text)


def create_job(jobs: Jobs, request: jobs_pb2.CreateJobRequest, who: Principal) -> jobs_pb2.Job:
    """CreateJob's work for caller `who`, shared by the HTTP API (which builds the same request from JSON): the
    same checks, the same idempotency hash, the same messages."""
    problems = []
    if request.kind not in _KIND_NAMES:
        problems.append(Violation("kind", f"unknown value {request.kind}; use TRAIN or TUNE"))
    if not request.HasField("spec"):
        raise InvalidArgument([Violation("spec", "required; send the job spec")])
    try:
        raw = spec_from_proto(request.spec)
    except SpecError as exc:
        problems += exc.violations
        raw = {}
    if problems:
        raise InvalidArgument(problems, "the request is invalid")
    # Everything but the idempotency key and validate_only identifies "the same request".
    # max_attempts 1 is the default 0, priority 5 is unset: either hashes as a request from before the field.
    body = jobs_pb2.CreateJobRequest(spec=request.spec, kind=request.kind, labels=request.labels,
                                     max_attempts=0 if request.max_attempts == 1 else request.max_attempts,
                                     notify_urls=request.notify_urls)
    priority = request.priority if request.HasField("priority") else None
    if priority is not None and priority != DEFAULT_PRIORITY:
        body.priority = priority
    body_hash = hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()
    job = jobs.create(raw, who=who, kind=_KIND_NAMES[request.kind], request_id=request.request_id,
                      validate_only=request.validate_only, labels=dict(request.labels), body_hash=body_hash,
                      max_attempts=request.max_attempts, notify_urls=tuple(request.notify_urls), priority=priority)
    return job_message(job, validate_only=request.validate_only)


def _listed(job: JobRecord, full: bool) -> jobs_pb2.Job:
    """A job as a list shows it; a stored row that cannot be converted is shown degraded, not as a failed page."""
    try:
        return job_message(job, full=full)
    except Exception as exc:  # one bad row (an older server's, a bug) must not hide every other job
        log.exception("job %s cannot be converted for ListJobs", job.id)
        return degraded_job_message(job, type(exc).__name__)


def _client_of(peer: str) -> str:
    """The client's address without its port ("ipv4:127.0.0.1:5123" -> "ipv4:127.0.0.1"): one client, many channels."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer  # unix sockets and the like: one per peer
