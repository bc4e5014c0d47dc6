"""Why a job failed, in one place: whose fault it is (USER or SYSTEM) and the status code it gets.

USER failures are the request's own and would fail again: a bad spec, data or model path (the `raysft`
command exits 2), an exception in training (exit 1). SYSTEM failures are the infrastructure's, and a
retry from the latest checkpoint may well succeed: the Ray job vanished or was stopped outside raysft, the
driver was killed (no exit code, or a signal's), a node or worker process died under training (Ray names
it with one of its system error types in the driver's last error line), or Ray stayed unreachable past the
server's deadline. Only SYSTEM failures are retried (CreateJob max_attempts).

What Ray reports decides (its JobStatus, the driver's exit code); the job's own output counts only for the
type of a Ray system error in its last `error:` line, which can at most earn a job the retries its
creator allowed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from raysft.service.ray.runner import RayJobInfo

__all__ = ["Failure", "USER", "SYSTEM", "MAX_ATTEMPTS", "ray_failure", "vanished", "unreachable", "stopped_outside",
           "rejected", "bad_stored_spec"]

USER, SYSTEM = "USER", "SYSTEM"
MAX_ATTEMPTS = 10  # CreateJob max_attempts, and how many attempts (resumes included) one job may take

# Ray's exception types for a dead process or node (ray.exceptions); a training exception is none of these.
_RAY_SYSTEM = re.compile(r"\b(ActorDiedError|NodeDiedError|WorkerCrashedError|OwnerDiedError|ActorUnavailableError|"
                         r"RaySystemError|LocalRayletDiedError|ObjectLostError|GetTimeoutError)\b")
_CLI_EXITS = {2: "INVALID_ARGUMENT", 1: "INTERNAL"}  # raysft.cli: 2 bad input, 1 the work ran and failed


@dataclass(frozen=True)
class Failure:
    """A failed job's error: its google.rpc code name, kind (USER / SYSTEM) and message."""

    code: str
    kind: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind == SYSTEM


def ray_failure(info: RayJobInfo, logs: str) -> Failure:
    """The failure of a Ray job that ended FAILED, from its exit code and its driver log."""
    errors = [line.split("error: ", 1)[1] for line in logs.splitlines() if line.startswith("error: ")]
    last_error = errors[-1][:2000] if errors else ""  # job output: bounded like an event's text
    code = f" (exit code {info.exit_code})" if info.exit_code is not None else ""
    reason = last_error or (info.message or "the Ray job failed").splitlines()[0][:500] + code
    if info.exit_code in _CLI_EXITS:
        kind = SYSTEM if info.exit_code == 1 and _RAY_SYSTEM.search(last_error) else USER
        return Failure(_CLI_EXITS[info.exit_code] if kind == USER else "UNAVAILABLE", kind, reason)
    # No exit code (the driver or its node died and Ray's supervisor saw it go) or another one (a signal:
    # Ray reports -9 or 137 for SIGKILL): the raysft command never ended on its own.
    return Failure("UNAVAILABLE", SYSTEM, f"the job's driver ended without finishing{code}: {reason}")


def vanished(submission_id: str) -> Failure:
    return Failure("UNAVAILABLE", SYSTEM, f"the Ray job {submission_id} no longer exists on the cluster (the cluster "
                                          "restarted or the job was deleted while the server was away)")


def unreachable(deadline_s: float, last: str) -> Failure:
    return Failure("UNAVAILABLE", SYSTEM, f"Ray stayed unreachable for over {deadline_s:g} s: {last}")


def stopped_outside(submission_id: str) -> Failure:
    return Failure("CANCELLED", SYSTEM, f"the Ray job {submission_id} was stopped outside raysft (ray job stop)")


def rejected(reason: str) -> Failure:
    # Ray refused the submission itself (HTTP 4xx): nothing of the request's spec, and a retry would be refused too.
    return Failure("INTERNAL", USER, reason)


def bad_stored_spec(reason: str) -> Failure:
    return Failure("INTERNAL", USER, f"the stored spec no longer validates: {reason}")
