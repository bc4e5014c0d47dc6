"""Who is calling, and what they may do: one decision for both transports (gRPC metadata, HTTP headers).

`Authenticator.authenticate(authorization)` maps the `Authorization` value (gRPC metadata or HTTP header, the
same text) to a `Principal` or raises Unauthenticated; the gRPC auth interceptor and the HTTP API both call it
and nothing else decides. The server token (--token-file) gives the operator, an admin of the default tenant;
a tenants file (raysft.service.jobs.tenants) maps each of its tokens to a principal of one tenant with a role.
`authorize(principal, action)` refuses what the role may not do (PermissionDenied: 403 / PERMISSION_DENIED);
which jobs a principal sees is `Principal.scope`, applied by raysft.service.operations.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from raysft.service.jobs.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from raysft.service.jobs.tenants import Tenants

__all__ = ["Principal", "Authenticator", "authorize", "OPERATOR", "ANONYMOUS", "READ_ACTIONS", "WRITE_ACTIONS",
           "DEFAULT_TENANT"]

DEFAULT_TENANT = "default"  # the tenant of the server token's and the admins' jobs, and of every job before tenants

READ_ACTIONS = frozenset({"GetJob", "ListJobs", "WatchJob", "ListJobEvents", "ListCheckpoints", "GetJobLogs"})
WRITE_ACTIONS = frozenset({"CreateJob", "CancelJob", "DeleteJob", "ResumeJob"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    """Who it is ("operator": the holder of the server token; "anonymous": a server without a token;
    "<tenant>/<role>" or "admin" for tokens of the tenants file)."""
    tenant: str
    """The tenant its jobs belong to."""
    role: str
    """"admin" (every tenant's jobs), "submitter" (its tenant's jobs) or "viewer" (reads its tenant's jobs)."""

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @property
    def scope(self) -> Optional[str]:
        """The tenant whose jobs it sees; None: every tenant's."""
        return None if self.admin else self.tenant


OPERATOR = Principal("operator", DEFAULT_TENANT, "admin")
ANONYMOUS = Principal("anonymous", DEFAULT_TENANT, "admin")  # no token on the server: whoever calls runs it


def authorize(principal: Principal, action: str) -> None:
    """Refuse `action` (an RPC name, e.g. "CancelJob") when the principal's role may not do it.

    Raises:
        PermissionDenied: a viewer asked to create, cancel, delete or resume.
    """
    if action not in READ_ACTIONS | WRITE_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if principal.role == "viewer" and action in WRITE_ACTIONS:
        raise PermissionDenied(f"{action}: the token of {principal.name} is a viewer's: it may read tenant "
                               f"{principal.tenant}'s jobs, not change them; use a submitter token of the tenant")


class Authenticator:
    """Maps bearer tokens to principals.

    Args:
        token: the server's token (its holder is the operator, an admin); None: none.
        tenants: the tenants file's tokens; with neither, every call is ANONYMOUS (loopback servers with
            --insecure-no-auth).
    """

    def __init__(self, token: Optional[str], tenants: Optional["Tenants"] = None):
        if token is not None and not token:
            raise ValueError("an empty token would let anyone in; put a long random string in the token file")
        self._token = token.encode() if token else None
        self._tenants = tenants

    @property
    def required(self) -> bool:
        """Whether calls must carry a token."""
        return self._token is not None or self._tenants is not None

    def authenticate(self, authorization: str) -> Principal:
        """The principal of an `Authorization` value ("Bearer <token>").

        Raises:
            Unauthenticated: the value is missing, not a bearer token, or not a known token.
        """
        if not self.required:
            return ANONYMOUS
        scheme, _, value = (authorization or "").partition(" ")
        presented = value.strip().encode()
        if scheme.lower() == "bearer" and presented:
            # Both are always compared: which one matched must not show in the time taken.
            operator = self._token is not None and hmac.compare_digest(presented, self._token)
            member = self._tenants.principal(presented) if self._tenants is not None else None
            if operator:
                return OPERATOR
            if member is not None:
                return member
        how = ("pass your tenant's token" if self._tenants is not None else
               "pass the server's token with --token-file or RAYSFT_TOKEN")
        raise Unauthenticated(("invalid token" if authorization else "missing bearer token") +
                              f"; {how} (header `authorization: Bearer <token>`)")
