"""Errors of the job service, one class per gRPC status code; the interceptor does the mapping.

Code below the servicer raises these and never imports grpc; messages name the bad input and the fix.
"""

from __future__ import annotations

from raysft.config import Violation

__all__ = ["ServiceError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition", "ResourceExhausted",
           "Unavailable"]


class ServiceError(Exception):
    """Base class; `code` is the name of a grpc.StatusCode."""

    code = "UNKNOWN"


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` name each bad field by its dotted path."""

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: list[Violation], summary: str = ""):
        self.violations = list(violations)
        lines = "; ".join(str(v) for v in self.violations)
        super().__init__(f"{summary}: {lines}" if summary else lines)


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """An operator cap is reached (e.g. active jobs); retrying later may succeed."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"
