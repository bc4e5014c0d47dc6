"""ASGI middleware of the HTTP port: a cap on request bodies, and request timing for Prometheus."""

from __future__ import annotations

import json
import time

__all__ = ["BodyLimit", "RequestMetrics"]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 to a body over `max_bytes`: at once from Content-Length, else as soon as the read passes it
    (a chunked upload is never held whole)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": {"code": "INVALID_ARGUMENT", "violations": [], "message":
                                     f"the request body is over {self.max_bytes} bytes; a job spec is a few kB"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Observes each request into `histogram` with labels method="<VERB> <route template>" (bounded: unmatched
    paths are "<VERB> unmatched") and code="<HTTP status>"; a stream counts until it closes."""

    def __init__(self, app, histogram):
        self.app, self.histogram = app, histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def tracked(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(f"{scope['method']} {template}", str(status)).observe(time.perf_counter() - start)
