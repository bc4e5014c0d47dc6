"""The job lifecycle: one enum, its terminal states and the one table of allowed transitions.

QUEUED → STARTING → RUNNING → SUCCEEDED | FAILED | CANCELLED, and CANCELLING while a cancel takes effect.
A job goes back to QUEUED for its next attempt: from STARTING or RUNNING when it failed for a SYSTEM reason and
has attempts left (an automatic retry), from FAILED or CANCELLED when a client resumes it (ResumeJob).
Every state change in the service goes through `check_transition`; the names match the proto's JobState.
"""

from __future__ import annotations

import enum

__all__ = ["JobState", "TERMINAL", "ACTIVE", "TRANSITIONS", "IllegalTransition", "check_transition", "from_ray_status"]


class JobState(str, enum.Enum):
    """The state of a job (the same names as the proto's JobState)."""

    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """SUCCEEDED, FAILED or CANCELLED: nothing follows unless a client resumes the job."""
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset(JobState) - TERMINAL

_S = JobState
# STARTING may end without RUNNING being seen: a short job can finish between two status polls.
# CANCELLING may still end SUCCEEDED or FAILED: the job finished before the stop reached it; it is never
# retried (the client asked it to end). → QUEUED from STARTING / RUNNING is an automatic retry (a SYSTEM
# failure with attempts left: watchers see no terminal state in between); from FAILED / CANCELLED, ResumeJob.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.STARTING, _S.CANCELLED, _S.FAILED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.CANCELLING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.QUEUED}),
    _S.RUNNING: frozenset({_S.CANCELLING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.QUEUED}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.SUCCEEDED, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.CANCELLED: frozenset({_S.QUEUED}),
}


class IllegalTransition(Exception):
    """A state change the lifecycle does not allow (FAILED_PRECONDITION to clients)."""

    def __init__(self, job_id: str, current: JobState, wanted: JobState):
        self.current, self.wanted = current, wanted
        allowed = ", ".join(s.value for s in TRANSITIONS[current]) or "none: it is terminal"
        super().__init__(f"job {job_id} is {current.value} and cannot become {wanted.value} (allowed: {allowed})")


def check_transition(job_id: str, current: JobState, wanted: JobState) -> None:
    """Raise IllegalTransition unless `current → wanted` is in the table."""
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition(job_id, current, wanted)


# Ray Jobs statuses (ray.job_submission.JobStatus values) to the job state they imply.
_FROM_RAY = {
    "PENDING": _S.STARTING,
    "RUNNING": _S.RUNNING,
    "SUCCEEDED": _S.SUCCEEDED,
    "FAILED": _S.FAILED,
    "STOPPED": _S.CANCELLED,
}


def from_ray_status(status: str) -> JobState:
    """The job state a Ray job status implies (STOPPED, by `ray job stop` or CancelJob, is CANCELLED)."""
    return _FROM_RAY[str(getattr(status, "value", status))]
