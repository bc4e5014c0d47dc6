"""JSON shapes of the HTTP API: the gRPC messages in proto3's JSON mapping (field names as in the proto, enums
by name, timestamps RFC 3339, durations "12.5s"), except that a job's `spec` is the YAML-shaped mapping
`POST /v1/jobs` takes. These models document the API (`/v1/openapi.json`) and check every response.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from raysft.service.api.speclimits import MAX_SPEC_BYTES

__all__ = ["CreateJobBody", "Job", "JobList", "JobEvent", "EventList", "Checkpoint", "CheckpointList", "Logs",
           "Trial", "TrialList", "ErrorBody", "STATE_NAMES", "KIND_NAMES"]

STATE_NAMES = ("QUEUED", "STARTING", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED")
KIND_NAMES = ("TRAIN", "TUNE")
State = Literal["JOB_STATE_UNSPECIFIED", "QUEUED", "STARTING", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")  # a newer server's fields do not break older readers' schema


class CreateJobBody(BaseModel):
    """`POST /v1/jobs`: what `raysft jobs submit` sends over gRPC, as JSON."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="The job spec as in YAML (model, data, train, ...), at most "
                                 f"{MAX_SPEC_BYTES} bytes as a proto message.")
    kind: Optional[Literal["TRAIN", "TUNE"]] = Field(None, description="Default: TUNE when the spec has a tune section.")
    request_id: str = Field("", description="Idempotency key: a retry with the same key and body returns the same job.")
    validate_only: bool = Field(False, description="Check the spec and its paths; store and run nothing.")
    labels: dict[str, str] = Field(default_factory=dict, description="Up to 64 key=value labels to filter by.")
    max_attempts: int = Field(0, ge=0, le=10, description="Attempts a TRAIN job gets when it fails for an "
                              "infrastructure reason (0: 1, no retry); user errors are never retried.")
    notify_urls: list[str] = Field(default_factory=list, description="Up to 5 http(s) URLs POSTed a signed notice of "
                                   "each state change, each under a prefix the operator allows.")
    priority: Optional[int] = Field(None, ge=0, le=9, description="0 - 9, higher leaves the admission queue first "
                                    "(unset: 5).")


class SpecWarning(_Out):
    field: str
    message: str


class Progress(_Out):
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    eval_loss: Optional[float] = None
    tokens_per_second: float = 0.0
    train_loss: float = 0.0
    eta: Optional[str] = None


class Output(_Out):
    output_dir: str = ""
    adapter_uri: str = ""
    summary: Optional[dict[str, Any]] = None


class Status(_Out):
    code: int
    message: str = ""


class Job(_Out):
    id: str
    kind: Literal["JOB_KIND_UNSPECIFIED", "TRAIN", "TUNE"]
    spec: Optional[dict[str, Any]] = None
    state: State
    state_reason: str = ""
    error: Optional[Status] = None
    create_time: Optional[str] = None
    start_time: Optional[str] = None
    end_time: Optional[str] = None
    update_time: Optional[str] = None
    progress: Optional[Progress] = None
    output: Optional[Output] = None
    ray_submission_id: str = ""
    queue_position: int = Field(0, description="Its place in the admission queue while QUEUED (1: next); 0 otherwise.")
    priority: int = Field(5, description="0 - 9: higher priorities leave the queue first.")
    labels: dict[str, str] = {}
    warnings: list[SpecWarning] = []
    request_id: str = ""
    notify_urls: list[str] = []
    tenant: str = ""


class JobList(_Out):
    jobs: list[Job]
    next_page_token: str = ""


class JobEvent(_Out):
    job_id: str
    sequence: int
    time: Optional[str] = None
    level: Literal["LEVEL_UNSPECIFIED", "INFO", "WARNING", "ERROR"]
    type: str
    message: str
    data: dict[str, Any] = {}


class EventList(_Out):
    events: list[JobEvent]
    next_page_token: str = ""


class Checkpoint(_Out):
    step: int
    uri: str
    metrics: dict[str, Any] = {}
    is_best: bool = False
    create_time: Optional[str] = None


class CheckpointList(_Out):
    checkpoints: list[Checkpoint]


class Logs(_Out):
    text: str = Field(description="The last lines of the job's driver log.")
    truncated: bool = Field(description="True when older text was left out (tail_lines, or the size cap).")


class Trial(_Out):
    id: str
    status: str = ""
    config: dict[str, Any] = {}
    eval_loss: Optional[float] = None
    best_step: Optional[int] = None
    rank: Optional[int] = None
    curve: list[dict[str, Any]] = Field(default=[], description="The trial's metrics.jsonl lines (step, train_loss, "
                                                                "eval_loss, ...), the last 2000 at most.")


class TrialList(_Out):
    trials: list[Trial]


class Violation(BaseModel):
    field: str
    message: str


class Error(BaseModel):
    code: str = Field(description="The gRPC status name: INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, ...")
    message: str
    violations: list[Violation] = []


class ErrorBody(BaseModel):
    error: Error
