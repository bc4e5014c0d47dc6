"""The HTTP/JSON API (`/v1/...`), the web console (`/`) and `/metrics`: translation only, like the gRPC servicer.

Every route authenticates with `Authenticator.authenticate` (the decision gRPC uses), hands the caller to `Jobs`
(which decides what it sees and may do), builds the same request the
gRPC servicer gets or calls the same `Jobs` operation, and answers in proto3's JSON mapping of the same messages.
Errors are the same raysft.service.jobs.errors exceptions, mapped once here to HTTP statuses with a body
`{"error": {"code": "INVALID_ARGUMENT", "message": ..., "violations": [{"field", "message"}]}}`, the fields
being the dotted spec paths gRPC's BadRequest carries. The console's pages and `/metrics` need no token (they
hold no job data; the pages ask for the token and send it with every API call).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from raysft.config import SpecError, Violation
from raysft.service.jobs.auth import Authenticator, Principal
from raysft.service.jobs.errors import InvalidArgument, ServiceError
from raysft.service.api.http import schemas
from raysft.service.api.http.middleware import BodyLimit, RequestMetrics
from raysft.service.api.http.sse import event_stream
from raysft.service.api.http.trials import read_trials
from raysft.service.operations import Jobs
from raysft.service.api.messages import checkpoint_message, degraded_job_message, event_message, job_message
from raysft.service.api.servicer import create_job
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import IllegalTransition, JobState
from raysft.service.api.streams import StreamSlots
from raysft.service.jobs.store import JobRecord
from raysft.service.api.metrics import ServiceMetrics
from raysft.service.v1 import jobs_pb2

__all__ = ["create_app", "HTTP_STATUS"]

log = logging.getLogger(__name__)

# gRPC status name -> HTTP status (Google's API mapping; FAILED_PRECONDITION is a conflict with the job's state).
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
               "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503,
               "INTERNAL": 500, "UNKNOWN": 500}
_ERRORS = {code: {"model": schemas.ErrorBody} for code in (400, 401, 403, 404, 409, 429, 503)}
_MAX_LOG_CHARS = 1 << 20  # the log tail one response carries
_CONSOLE = Path(__file__).parent / "console"
_KINDS = {None: jobs_pb2.JOB_KIND_UNSPECIFIED, "TRAIN": jobs_pb2.TRAIN, "TUNE": jobs_pb2.TUNE}


def _json(message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True,
                                     unquote_int64_if_possible=True)


def job_json(job: JobRecord, message: Optional[jobs_pb2.Job] = None, *, full: bool = True) -> dict:
    """A job as the API shows it: the Job message as JSON, its spec the YAML-shaped mapping."""
    message = message if message is not None else job_message(job, full=full)
    out = _json(message)
    out.pop("spec", None)
    if full and message.HasField("spec"):
        out["spec"] = job.spec
    return out


def _error(status: int, code: str, message: str, violations: list[Violation] = ()) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message,
                                   "violations": [{"field": v.field, "message": v.message} for v in violations]}}, status)


def create_app(jobs: Jobs, authenticator: Authenticator, metrics: ServiceMetrics, *, max_streams_per_client: int = 16,
               max_streams: int = 256, max_stream_s: float = 600.0, max_body_bytes: int = 256 * 1024) -> FastAPI:
    """The ASGI app of the HTTP port.

    Args:
        max_streams_per_client, max_streams: open event streams per client address and in all (429 beyond).
        max_stream_s: an event stream ends after this long (the client reconnects with Last-Event-ID).
        max_body_bytes: larger request bodies get 413 before they are read.
    """
    app = FastAPI(title="raysft job service", version="v1", openapi_url="/v1/openapi.json", docs_url=None,
                  redoc_url=None, description="The raysft.v1.JobService gRPC API as HTTP/JSON. Authenticate with "
                                              "`Authorization: Bearer <token>`.")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestMetrics, histogram=metrics.rpc)  # outermost: 413s and 401s are counted too
    slots = StreamSlots(max_streams_per_client, max_streams, what="open event streams",
                        hint="close some (or page with GET /v1/jobs/{id}/events)")
    app.state.service = _Service(jobs, authenticator, metrics, max_stream_s, slots)
    for exc_class, handler in _ERROR_HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    app.include_router(_routes)
    app.mount("/console", StaticFiles(directory=_CONSOLE), name="console")
    app.openapi = lambda: _openapi(app)
    return app


@dataclass(frozen=True)
class _Service:
    """What the routes of one app serve from: the arguments of create_app they read.

    It lives on `app.state.service`, so that the routes are plain module-level functions on one router that every
    app includes, reaching it through the `_service` / `_jobs` / `_principal` dependencies.
    """

    jobs: Jobs
    authenticator: Authenticator
    metrics: ServiceMetrics
    max_stream_s: float
    slots: StreamSlots  # the open event streams, bounded per client and in all


def _service(request: Request) -> _Service:
    return request.app.state.service


def _jobs(request: Request) -> Jobs:
    return _service(request).jobs


_BEARER = HTTPBearer(auto_error=False, description="the server's token (--token-file) or a tenant's (--tenants)")


def _principal(request: Request, _credentials=Depends(_BEARER)) -> Principal:
    return _service(request).authenticator.authenticate(request.headers.get("authorization", ""))


# ---------------------------------------------------------------------------------- errors


async def _service_error(_request, exc: ServiceError):
    return _error(HTTP_STATUS.get(exc.code, 500), exc.code, str(exc), getattr(exc, "violations", ()))


async def _illegal(_request, exc: IllegalTransition):
    return _error(409, "FAILED_PRECONDITION", str(exc))


async def _bad_request(_request, exc: RequestValidationError):
    violations = [Violation(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), e["msg"])
                  for e in exc.errors()]
    error = InvalidArgument(violations, "the request is invalid")
    return _error(400, error.code, str(error), error.violations)


async def _internal(_request, exc: Exception):
    ref = secrets.token_hex(4)
    log.error("internal error %s", ref, exc_info=exc)
    return _error(500, "INTERNAL", f"internal error (reference {ref} in the server log)")


_ERROR_HANDLERS = {ServiceError: _service_error, IllegalTransition: _illegal, RequestValidationError: _bad_request,
                   Exception: _internal}


# -------------------------------------------------------------------------------------- jobs
# Each route function is named for its operation: the name is the stem of its operationId in /v1/openapi.json.

_routes = APIRouter()


@_routes.get("/v1/jobs", response_model=schemas.JobList, responses=_ERRORS, tags=["jobs"])
def list_jobs(state: list[schemas.Literal[schemas.STATE_NAMES]] = Query([], description="Only jobs in these states."),  # type: ignore[valid-type]
              label: list[str] = Query([], description="key=value; only jobs carrying every one.", max_length=64),
              page_size: int = Query(0, ge=0, le=1000, description="0: 50."),
              page_token: str = Query("", max_length=64), view: schemas.Literal["BASIC", "FULL"] = "BASIC",
              who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    found, token = jobs.list(who=who, states=tuple(JobState(s) for s in state), labels=_labels(label),
                             page_size=page_size, page_token=page_token)
    return {"jobs": [_listed(j, view == "FULL") for j in found], "next_page_token": token}


def _labels(label: list[str]) -> dict[str, str]:
    """The `label` query values (key=value each) as a mapping."""
    labels = {}
    for i, item in enumerate(label):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument([Violation(f"label.{i}", f"write key=value (got {item[:100]!r})")])
        labels[key] = value
    return labels


@_routes.post("/v1/jobs", response_model=schemas.Job, responses=_ERRORS, tags=["jobs"])
def create(body: schemas.CreateJobBody, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    try:
        spec = spec_to_proto(body.spec)
    except SpecError as exc:
        raise InvalidArgument(exc.violations, "the job spec is invalid") from None
    request = jobs_pb2.CreateJobRequest(spec=spec, kind=_KINDS[body.kind], request_id=body.request_id,
                                        validate_only=body.validate_only, labels=body.labels,
                                        max_attempts=body.max_attempts, notify_urls=body.notify_urls,
                                        priority=body.priority)
    message = create_job(jobs, request, who)
    if body.validate_only:
        return {**job_json(JobRecord(id="", kind="train", spec={}), message, full=False), "spec": None}
    return job_json(jobs.get(message.id, who=who), message)


@_routes.get("/v1/jobs/{job_id}", response_model=schemas.Job, responses=_ERRORS, tags=["jobs"])
def get(job_id: str, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    return job_json(jobs.get(job_id, who=who))


@_routes.post("/v1/jobs/{job_id}:cancel", response_model=schemas.Job, responses=_ERRORS, tags=["jobs"])
def cancel(job_id: str, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    return job_json(jobs.cancel(job_id, who=who))


@_routes.post("/v1/jobs/{job_id}:resume", response_model=schemas.Job, responses=_ERRORS, tags=["jobs"])
def resume(job_id: str, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    return job_json(jobs.resume(job_id, who=who))


@_routes.delete("/v1/jobs/{job_id}", status_code=204, response_class=Response, responses=_ERRORS, tags=["jobs"])
def delete(job_id: str, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> Response:
    jobs.delete(job_id, who=who)
    return Response(status_code=204)


@_routes.get("/v1/jobs/{job_id}/events", response_model=schemas.EventList, responses=_ERRORS, tags=["events"])
def events(job_id: str, after: int = Query(0, ge=0, le=2**63 - 1, description="Events after this sequence number."),
           page_size: int = Query(0, ge=0, le=1000, description="0: 100."), page_token: str = Query("", max_length=64),
           who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    found, token = jobs.events(job_id, who=who, after=after, page_size=page_size, page_token=page_token)
    return {"events": [_json(event_message(e)) for e in found], "next_page_token": token}


@_routes.get("/v1/jobs/{job_id}/events:watch", responses={**_ERRORS, 200: {"content": {"text/event-stream": {}},
             "description": "Server-Sent Events: `id` the sequence, `event` the type, `data` the JobEvent JSON; an "
                            "`end` event closes it (terminal state, or max stream time: reconnect with Last-Event-ID)."}},
             response_class=StreamingResponse, tags=["events"])
async def watch(request: Request, job_id: str, after: int = Query(0, ge=0, le=2**63 - 1),
                who: Principal = Depends(_principal)) -> StreamingResponse:
    service = _service(request)
    last_id = request.headers.get("last-event-id", "")
    if last_id.isdigit() and len(last_id) <= 18:
        after = max(after, int(last_id))
    await asyncio.to_thread(service.jobs.get, job_id, who=who)  # 404 now, not inside a 200 stream
    stream = event_stream(service.jobs, who, job_id, after, service.slots, request.client.host if request.client else "",
                          service.max_stream_s, lambda e: _json(event_message(e)))
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@_routes.get("/v1/jobs/{job_id}/checkpoints", response_model=schemas.CheckpointList, responses=_ERRORS, tags=["jobs"])
def checkpoints(job_id: str, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    kept, best = jobs.checkpoints(job_id, who=who)
    return {"checkpoints": [_json(checkpoint_message(c, c.step == best)) for c in kept]}


@_routes.get("/v1/jobs/{job_id}/logs", response_model=schemas.Logs, responses=_ERRORS, tags=["jobs"])
async def logs(job_id: str, tail_lines: int = Query(200, ge=1, le=10_000), who: Principal = Depends(_principal),
               jobs: Jobs = Depends(_jobs)) -> dict:
    text = "".join([chunk async for chunk in jobs.logs(job_id, who=who, tail_lines=tail_lines, follow=False)])
    truncated = len(text) > _MAX_LOG_CHARS
    return {"text": text[-_MAX_LOG_CHARS:], "truncated": truncated or text.count("\n") >= tail_lines}


@_routes.get("/v1/jobs/{job_id}/trials", response_model=schemas.TrialList, responses=_ERRORS, tags=["jobs"])
def trials(job_id: str, who: Principal = Depends(_principal), jobs: Jobs = Depends(_jobs)) -> dict:
    """A tune job's trials (from its summary once it ended) and each trial's metric curve (from its run
    directory, as it runs); empty for a train job."""
    return {"trials": read_trials(jobs.get(job_id, who=who))}


# ----------------------------------------------------------------------- console and metrics


@_routes.get("/metrics", include_in_schema=False)
def prometheus(request: Request) -> Response:
    return Response(generate_latest(_service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@_routes.get("/", include_in_schema=False)
def console() -> FileResponse:
    return FileResponse(_CONSOLE / "index.html", headers={"Cache-Control": "no-store"})


def _listed(job: JobRecord, full: bool) -> dict[str, Any]:
    """A job as a list shows it; a row that cannot be converted is shown degraded (as ListJobs does)."""
    try:
        return job_json(job, full=full)
    except Exception as exc:  # one bad row must not hide every other job
        log.exception("job %s cannot be converted for GET /v1/jobs", job.id)
        return _json(degraded_job_message(job, type(exc).__name__))


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document without its 422 responses: validation errors are 400 here, as gRPC's INVALID_ARGUMENT."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema
