"""Caps on open streams (gRPC WatchJob / GetJobLogs, HTTP Server-Sent Events), per client address and in all.

A stream holds no thread while it waits, but each holds a connection, a store subscription and a poll a second;
without caps one client could open thousands. Slots are taken and given back on the event loop only.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Iterator, Optional

from raysft.service.jobs.errors import ResourceExhausted

__all__ = ["StreamSlots"]


class StreamSlots:
    """At most `per_client` open streams per client address and `total` (None: no cap) across clients.

    Args:
        what: what the refusal calls the streams ("open WatchJob / GetJobLogs streams").
        hint: what the refusal tells the client to do instead.
    """

    def __init__(self, per_client: int, total: Optional[int] = None, *, what: str = "streams", hint: str = "close some"):
        self.per_client, self.total, self._what, self._hint = per_client, total, what, hint
        self._open: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Hold one slot of `client` while the block runs. Raises ResourceExhausted when none is free."""
        if self._open[client] >= self.per_client:
            raise ResourceExhausted(f"this client already has {self.per_client} {self._what}; {self._hint}")
        if self.total is not None and sum(self._open.values()) >= self.total:
            raise ResourceExhausted(f"this server already serves {self.total} {self._what}; retry later, or {self._hint}")
        self._open[client] += 1
        try:
            yield
        finally:
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]
