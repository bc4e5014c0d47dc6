"""Store records as `raysft.v1` messages (jobs, events, checkpoints)."""

from __future__ import annotations

import math
from typing import Any, Optional

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.rpc import code_pb2, status_pb2

from raysft.service.ray.runner import ray_submission_id
from raysft.service.api.specproto import spec_to_proto
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import CheckpointRecord, EventRecord, JobRecord
from raysft.service.v1 import jobs_pb2

__all__ = ["job_message", "degraded_job_message", "event_message", "checkpoint_message", "state_from_message", "KINDS"]

KINDS = {"train": jobs_pb2.TRAIN, "tune": jobs_pb2.TUNE}
_LEVELS = {"info": jobs_pb2.INFO, "warning": jobs_pb2.WARNING, "error": jobs_pb2.ERROR}


_MAX_INT64 = 2 ** 63 - 1
_MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last instant a Timestamp holds


def _time(t: Optional[float]) -> Optional[timestamp_pb2.Timestamp]:
    if t is None or not (isinstance(t, (int, float)) and 0 <= t <= _MAX_TIME):  # also NaN
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(t * 1e9))
    return stamp


def _num(value: Any) -> float:
    """A stored progress number as a double: 0.0 for anything not a finite number (rows of older servers)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else 0.0


def _int(value: Any) -> int:
    """A stored count as a non-negative int64 (clamped; 0 for anything not a number)."""
    n = value if isinstance(value, int) and not isinstance(value, bool) else _num(value)
    return int(min(max(n, 0), _MAX_INT64))


def _struct(data: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(_jsonable(data))
    return out


def _jsonable(value: Any) -> Any:
    # Struct holds JSON: tuples become lists, anything exotic its text.
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def state_from_message(number: int) -> JobState:
    """The JobState of a proto JobState number. Raises ValueError for 0 or unknown numbers."""
    return JobState(jobs_pb2.JobState.Name(number))


def job_message(job: JobRecord, *, validate_only: bool = False, full: bool = True) -> jobs_pb2.Job:
    """A JobRecord as a Job message (a validate-only result has no id and no state).

    Args:
        full: with the spec and the run's summary; False gives ListJobs' BASIC view, bounded in size.
    """
    p = job.progress
    msg = jobs_pb2.Job(
        id=job.id, kind=KINDS[job.kind], spec=spec_to_proto(job.spec) if full else None,
        state=jobs_pb2.JOB_STATE_UNSPECIFIED if validate_only else jobs_pb2.JobState.Value(job.state.value),
        state_reason=job.state_reason, ray_submission_id=ray_submission_id(job.id, job.attempt) if job.submitted_at else "",
        labels=job.labels, request_id=job.request_id or "", attempt=0 if validate_only else job.attempt,
        max_attempts=job.max_attempts, notify_urls=job.notify_urls, queue_position=job.queue_position,
        priority=job.priority, error_kind=jobs_pb2.ErrorKind.Value(job.error_kind) if job.error_kind else 0,
        tenant=job.tenant,
        warnings=[jobs_pb2.SpecWarning(field=w["field"], message=w["message"]) for w in job.warnings],
        progress=jobs_pb2.Progress(step=_int(p.get("step", 0)), total_steps=_int(p.get("total_steps", 0)),
                                   epoch=_num(p.get("epoch")), tokens_per_second=_num(p.get("tokens_per_second")),
                                   train_loss=_num(p.get("train_loss"))),
    )
    if "eval_loss" in p:
        msg.progress.eval_loss = _num(p["eval_loss"])
    if "eta_s" in p:
        msg.progress.eta.CopyFrom(duration_pb2.Duration(seconds=min(_int(p["eta_s"]), 315_576_000_000)))  # Duration's max
    if job.output:
        msg.output.CopyFrom(jobs_pb2.Output(output_dir=job.output.get("output_dir", ""),
                                            adapter_uri=job.output.get("adapter_uri", ""),
                                            summary=_struct(job.output.get("summary") or {}) if full else None))
    elif job.spec.get("output_dir"):
        msg.output.output_dir = job.spec["output_dir"]
    if job.error_code:
        msg.error.CopyFrom(status_pb2.Status(code=code_pb2.Code.Value(job.error_code), message=job.error_message))
    for name, t in (("create_time", job.created_at), ("start_time", job.started_at), ("end_time", job.ended_at),
                    ("update_time", job.updated_at)):
        stamp = _time(t) if t else None
        if stamp is not None:
            getattr(msg, name).CopyFrom(stamp)
    return msg


def degraded_job_message(job: JobRecord, problem: str) -> jobs_pb2.Job:
    """What a list shows of a stored job that `job_message` cannot convert: its id, state and why."""
    msg = jobs_pb2.Job(id=job.id, kind=KINDS.get(job.kind, jobs_pb2.JOB_KIND_UNSPECIFIED),
                       state_reason=f"this job's record cannot be shown in full ({problem}); GetJob it for details")
    if job.state.value in jobs_pb2.JobState.keys():
        msg.state = jobs_pb2.JobState.Value(job.state.value)
    return msg


def event_message(e: EventRecord) -> jobs_pb2.JobEvent:
    """An EventRecord as a JobEvent."""
    return jobs_pb2.JobEvent(job_id=e.job_id, sequence=e.sequence, time=_time(e.time), level=_LEVELS.get(e.level, jobs_pb2.INFO),
                             type=e.type, message=e.message, data=_struct(e.data))


def checkpoint_message(c: CheckpointRecord, is_best: bool) -> jobs_pb2.Checkpoint:
    """A CheckpointRecord as a Checkpoint."""
    return jobs_pb2.Checkpoint(step=c.step, uri=c.uri, metrics=_struct(c.metrics), is_best=is_best,
                               create_time=_time(c.created_at))
