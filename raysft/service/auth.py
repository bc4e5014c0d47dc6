"""Who is calling: one decision for both transports (gRPC metadata, HTTP headers), from the bearer token.

`Authenticator.authenticate(authorization)` maps the `Authorization` value (gRPC metadata or HTTP header, the
same text) to a `Principal` or raises Unauthenticated; the gRPC auth interceptor and the HTTP API both call it
and nothing else decides. Today one server token gives one principal, the operator; tenants and roles extend
this seam: a token maps to a principal carrying its tenant and role, and `authorize` refuses what the role may
not do (PermissionDenied: 403 / PERMISSION_DENIED).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Optional

from raysft.service.errors import Unauthenticated

__all__ = ["Principal", "Authenticator", "OPERATOR", "ANONYMOUS"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    """Who it is ("operator": the holder of the server token; "anonymous": a server without a token)."""


OPERATOR = Principal("operator")
ANONYMOUS = Principal("anonymous")
_HOW = "pass the server's token with --token-file or RAYSFT_TOKEN (header `authorization: Bearer <token>`)"


class Authenticator:
    """Maps bearer tokens to principals.

    Args:
        token: the server's token; None accepts every call as ANONYMOUS (loopback servers with --insecure-no-auth).
    """

    def __init__(self, token: Optional[str]):
        if token is not None and not token:
            raise ValueError("an empty token would let anyone in; put a long random string in the token file")
        self._token = token.encode() if token else None

    @property
    def required(self) -> bool:
        """Whether calls must carry a token."""
        return self._token is not None

    def authenticate(self, authorization: str) -> Principal:
        """The principal of an `Authorization` value ("Bearer <token>").

        Raises:
            Unauthenticated: the value is missing, not a bearer token, or not a known token.
        """
        if self._token is None:
            return ANONYMOUS
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token):
            return OPERATOR
        raise Unauthenticated(("invalid token" if authorization else "missing bearer token") + "; " + _HOW)
