"""Errors of the job service, one class per gRPC status code; the interceptor does the mapping.

Code below the servicer raises these and never imports grpc; messages name the bad input and the fix.
"""

from __future__ import annotations

from raysft.config import Violation

__all__ = ["ServiceError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition", "ResourceExhausted",
           "Unavailable", "Unauthenticated", "PermissionDenied", "MAX_VIOLATIONS"]

MAX_VIOLATIONS = 20  # an error's trailer stays a few kB: grpc clients refuse trailers over 8 kB by default
_MAX_FIELD, _MAX_DESCRIPTION = 200, 300


class ServiceError(Exception):
    """Base class; `code` is the name of a grpc.StatusCode."""

    code = "UNKNOWN"


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` name each bad field by its dotted path."""

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: list[Violation], summary: str = ""):
        # At most MAX_VIOLATIONS, each cut short, the last saying how many more there were: a request with
        # thousands of bad labels must still get an answer its client can read.
        shown = [Violation(v.field[:_MAX_FIELD], _cut(v.message, _MAX_DESCRIPTION)) for v in violations[:MAX_VIOLATIONS]]
        if len(violations) > MAX_VIOLATIONS:
            shown.append(Violation(shown[-1].field, f"... and {len(violations) - MAX_VIOLATIONS} more problem(s); fix "
                                                    "these and send it again"))
        self.violations = shown
        lines = "; ".join(str(v) for v in shown[:3]) + (f"; ... ({len(violations)} in all)" if len(violations) > 3 else "")
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


class Unauthenticated(ServiceError):
    """No credentials, or credentials this server does not know."""

    code = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """Known credentials that may not do this (tenants and roles decide; see raysft.service.jobs.auth)."""

    code = "PERMISSION_DENIED"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
