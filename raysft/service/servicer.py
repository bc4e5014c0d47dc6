"""`raysft.v1.JobService`: translates messages to `Jobs` calls and back, nothing more.

The server runs on grpc.aio: one event loop serves every call. Validation and single-row reads run on the
loop itself (well under a millisecond; a hop to a thread and back costs more than the work), everything that
reaches Ray, writes, or pages through many rows runs in the loop's thread pool, and streams drive their blocking
iterators from that pool. Errors are raised as raysft.service.errors exceptions; the error interceptor turns
them into status codes with details.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
from typing import AsyncIterator, Callable, Iterator

from google.protobuf import empty_pb2

from raysft.config import SpecError, Violation
from raysft.service.errors import InvalidArgument
from raysft.service.jobs import Jobs
from raysft.service.messages import checkpoint_message, event_message, job_message, state_from_message
from raysft.service.specproto import spec_from_proto
from raysft.service.v1 import jobs_pb2, jobs_pb2_grpc

__all__ = ["JobServicer"]

_KIND_NAMES = {jobs_pb2.JOB_KIND_UNSPECIFIED: None, jobs_pb2.TRAIN: "train", jobs_pb2.TUNE: "tune"}
_END = object()


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """The gRPC face of `Jobs`."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context) -> jobs_pb2.Job:
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
        body = jobs_pb2.CreateJobRequest(spec=request.spec, kind=request.kind, labels=request.labels)
        body_hash = hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()
        create = functools.partial(self.jobs.create, raw, kind=_KIND_NAMES[request.kind], request_id=request.request_id,
                                   validate_only=request.validate_only, labels=dict(request.labels), body_hash=body_hash)
        job = create() if request.validate_only else await asyncio.to_thread(create)  # a real create asks Ray and writes
        return job_message(job, validate_only=request.validate_only)

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context) -> jobs_pb2.Job:
        return job_message(self.jobs.get(request.job_id))

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context) -> jobs_pb2.ListJobsResponse:
        states = []
        for i, number in enumerate(request.states):
            try:
                states.append(state_from_message(number))
            except ValueError:
                raise InvalidArgument([Violation(f"states.{i}", f"unknown state {number}; use QUEUED, STARTING, RUNNING, "
                                                                "CANCELLING, SUCCEEDED, FAILED or CANCELLED")]) from None
        jobs, token = await asyncio.to_thread(
            self.jobs.list, states=tuple(states), labels=dict(request.labels), page_size=request.page_size,
            page_token=request.page_token)
        return jobs_pb2.ListJobsResponse(jobs=[job_message(j) for j in jobs], next_page_token=token)

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context) -> jobs_pb2.Job:
        return job_message(await asyncio.to_thread(self.jobs.cancel, request.job_id))

    async def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context) -> empty_pb2.Empty:
        await asyncio.to_thread(self.jobs.delete, request.job_id)
        return empty_pb2.Empty()

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context) -> AsyncIterator[jobs_pb2.JobEvent]:
        async for event in _in_threads(functools.partial(self.jobs.watch, request.job_id, request.after_sequence)):
            yield event_message(event)

    async def ListJobEvents(self, request: jobs_pb2.ListJobEventsRequest, context) -> jobs_pb2.ListJobEventsResponse:
        events, token = await asyncio.to_thread(
            self.jobs.events, request.job_id, after=request.after_sequence, page_size=request.page_size,
            page_token=request.page_token)
        return jobs_pb2.ListJobEventsResponse(events=[event_message(e) for e in events], next_page_token=token)

    async def ListCheckpoints(self, request: jobs_pb2.ListCheckpointsRequest, context) -> jobs_pb2.ListCheckpointsResponse:
        kept, best = self.jobs.checkpoints(request.job_id)
        return jobs_pb2.ListCheckpointsResponse(checkpoints=[checkpoint_message(c, c.step == best) for c in kept])

    async def GetJobLogs(self, request: jobs_pb2.GetJobLogsRequest, context) -> AsyncIterator[jobs_pb2.LogChunk]:
        async for text in _in_threads(functools.partial(self.jobs.logs, request.job_id, tail_lines=request.tail_lines,
                                                        follow=request.follow)):
            yield jobs_pb2.LogChunk(text=text)


async def _in_threads(start: Callable[..., Iterator]) -> AsyncIterator:
    """Items of the blocking iterator `start(active=...)`, each fetched in the thread pool.

    `active()` turns False once the stream ends for any reason (the client left, the server stops), so a fetch
    still waiting in a thread gives up at its next check instead of holding its thread.
    """
    ended = threading.Event()
    items = start(active=lambda: not ended.is_set())
    try:
        while (item := await asyncio.to_thread(next, items, _END)) is not _END:
            yield item
    finally:
        ended.set()
